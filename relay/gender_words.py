# ruff: noqa: RUF001 - words in many scripts, letters that look like Latin ones included
"""Words for a customer's gender, in the main languages of Meta's markets, as ``f`` or ``m``.

Meta takes ``ge`` as ``f`` or ``m`` only. Shops send what their forms say: ``Female``, ``mujer``,
``Mrs.``, ``weiblich``, ``женский``, ``女``. ``relay.hashing`` compares a value with these
words lowercase, without punctuation or spaces (``Mrs.`` is ``mrs``, ``prefer-not-to-say`` is
``prefernottosay``), and also without accents. A word for neither (``x``,
``divers``, ``non-binary``, ``unknown``) is in ``NEITHER``: the key is dropped, since Meta has no
form for it and refusing the event would punish the customer's answer. Anything else is refused
(422): it is more likely a mapping bug (``1``/``2``, a name in the wrong column) than a gender.

Single letters are taken only where a language's forms use them (German ``w``, Dutch ``v``,
French and Spanish ``h`` for homme/hombre, Polish and Turkish ``k``, Turkish ``e``, Cyrillic
``ж``/``м``). Spanish forms sometimes use ``M`` for *mujer*; Meta's own ``m`` is male, and
that wins.
"""

from __future__ import annotations

_FEMALE = """
f female woman women girl lady mrs ms miss mz madam
mujer femenino femenina fem señora senora sra srta señorita senorita
mulher feminino feminina senhora
femme féminin feminin féminine feminine madame mme mlle mademoiselle
weiblich frau w
femmina donna signora sigra femminile
vrouw vrouwelijk mevrouw mevr v
kobieta żeński zenski pani k
kadın kadin bayan kız kiz
женский женская женщина жен ж девушка жіноча жінка жіночий
أنثى انثى امرأة إمرأة سيدة
महिला स्त्री औरत
perempuan wanita ibu
nữ
หญิง ผู้หญิง นาง นางสาว
女 女性 女子 女士 妇女 婦女
여 여성 여자
babae
মহিলা নারী
عورت خاتون
زن
γυναίκα θήλυ
kvinna kvinne kvinde kvinnlig kvindelig
nainen
žena zena ženské ženský
femeie
nő
נקבה אישה
"""

_MALE = """
m male man men boy gentleman mr
hombre masculino masc señor senor sr
homem senhor
homme masculin monsieur h
männlich mannlich herr
maschio uomo maschile signore sig
mannelijk meneer dhr
mężczyzna mezczyzna męski meski pan
erkek bay e
мужской мужская мужчина муж м чоловічий чоловік чоловіча ч
ذكر رجل سيد
पुरुष आदमी
pria laki-laki lelaki bapak
nam
ชาย ผู้ชาย นาย
男 男性 男子 先生
남 남성 남자
lalaki
পুরুষ
مرد آقا
άνδρας άρρεν
manlig mannlig mand mandlig mann
mies
muž muz mužské mužský
bărbat barbat
férfi ferfi
זכר גבר
"""

_NEITHER = """
x u d o nb
other others divers diverse non-binary nonbinary enby genderqueer agender mx
unknown unspecified none n/a prefer-not-to-say not-specified
otro otra outro outra autre inconnu andere unbekannt altro
другой другое інший
"""


def _words(block: str) -> list[str]:
    return block.split()


FEMALE_WORDS = frozenset(_words(_FEMALE))
MALE_WORDS = frozenset(_words(_MALE))
NEITHER_WORDS = frozenset(_words(_NEITHER))
