// pixelrelay dashboard: the little the pages need beyond htmx. No inline scripts (strict CSP).
(function () {
  "use strict";
  // Polling pauses while the tab is hidden, and refreshes at once when it is shown again.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var el = evt.detail.elt;
    if (el && el.hasAttribute && el.hasAttribute("data-poll") && document.visibilityState !== "visible") {
      evt.preventDefault();
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && window.htmx) {
      document.querySelectorAll("[data-poll]").forEach(function (el) { window.htmx.trigger(el, "refresh"); });
    }
  });
  // A fragment refused for want of a session sends the whole page to the login (htmx follows
  // HX-Redirect itself; this covers an answer without it). Other errors keep the last numbers.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    if (xhr && xhr.status === 401) {
      window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
    }
  });
  // Confirmations that state what will happen (buttons carrying data-confirm).
  document.addEventListener("click", function (evt) {
    var button = evt.target.closest ? evt.target.closest("button[data-confirm]") : null;
    if (!button) { return; }
    var form = button.form;
    var selected = form ? form.querySelectorAll("input[name=keys]:checked").length : 0;
    var text = button.getAttribute("data-confirm");
    if (/selected/.test(text)) {
      if (!selected) { evt.preventDefault(); window.alert("Select at least one dead letter first."); return; }
      text = text.replace("the selected", "the " + selected + " selected");
    }
    if (!window.confirm(text)) { evt.preventDefault(); }
  });
  // "Select every row on this page".
  document.addEventListener("change", function (evt) {
    if (evt.target && evt.target.id === "select-all") {
      document.querySelectorAll("#dead-table input[name=keys]").forEach(function (box) { box.checked = evt.target.checked; });
    }
  });
})();
