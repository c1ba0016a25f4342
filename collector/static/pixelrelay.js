/* pixelrelay.js (docs/integrations.md): each event goes to the collector (sendBeacon) and to
   Meta's pixel with the same eventID, so Meta deduplicates them.
   pixelrelay.consent(true|false) once the visitor chose: later events carry it. */
(function (w, d) {
  var s = d.currentScript, base = s ? s.src.replace(/\/pixelrelay\.js.*$/, '') : '';
  var pixel = s && s.getAttribute('data-pixel');
  var consent = null;
  var STD = ',AddPaymentInfo,AddToCart,AddToWishlist,CompleteRegistration,Contact,' +
    'CustomizeProduct,Donate,FindLocation,InitiateCheckout,Lead,PageView,Purchase,Schedule,' +
    'Search,StartTrial,SubmitApplication,Subscribe,ViewContent,';
  function id() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    return Date.now().toString(16) + Math.random().toString(16).slice(2, 14);
  }
  function track(name, data, opts) {
    opts = opts || {};
    var eventId = opts.eventID || id();
    var body = JSON.stringify({
      pixel_id: opts.pixel || pixel, event_name: name, event_id: eventId,
      event_source_url: w.location.href, referrer_url: d.referrer || null,
      custom_data: data || null, external_id: opts.externalId || null,
      consent: opts.consent === undefined ? consent : !!opts.consent
    });
    var sent = false;
    try { sent = navigator.sendBeacon(base + '/v1/beacon', body); } catch (e) {}
    if (!sent && w.fetch) {
      fetch(base + '/v1/beacon', {method: 'POST', body: body, keepalive: true,
                                  credentials: 'include', mode: 'cors'});
    }
    if (typeof w.fbq === 'function') {
      w.fbq(STD.indexOf(',' + name + ',') < 0 ? 'trackCustom' : 'track', name, data || {},
            {eventID: eventId});
    }
    return eventId;
  }
  var q = (w.pixelrelay && w.pixelrelay.q) || [];
  w.pixelrelay = {track: track, consent: function (granted) { consent = !!granted; }};
  for (var i = 0; i < q.length; i++) track.apply(null, q[i]);
  if (s && s.hasAttribute('data-pageview')) track('PageView');
})(window, document);
