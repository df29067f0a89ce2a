"""Redaction: take secrets out of any text before it is shown, logged, stored or cut.

Two functions, used by every module that builds a message from foreign text:

- :func:`redact` replaces secrets by ``<redacted>``;
- :func:`safe_text` turns any object into text, redacts it, and only *then* cuts it to a length.
  Cutting first would be a leak: 40 of a private key's 64 hex digits are no longer recognisable
  as a key, yet they are most of it.

What counts as a secret (each shape has a test that fails when its rule is deleted):

- runs of 64 or more hex digits, with or without ``0x`` (private keys, signature halves);
  wallet addresses (40 hex digits) and cloids (32) stay, a person needs them;
- the value after a credential-like name and ``:`` / ``=`` / ``,``: ``Authorization``,
  ``Cookie`` (every pair), ``*token*``, ``*secret*`` (``secret_key``, ``secretKey``,
  ``api_secret``), ``*passphrase*`` (``OK-ACCESS-PASSPHRASE``), ``*password*``, ``*api_key*``,
  ``*access_key*``, ``*signature*``, ``*private_key*``, ``*credential*``, ``*mnemonic*``,
  ``x-auth*``; quoted, escaped-JSON (``\\"api_key\\": \\"X\\"``), list (``['Bearer X']``),
  object (``{"r": ..., "s": ...}``) and scheme (``Bearer X``, ``Basic X``, ``Token X``,
  ``ApiKey X``) values alike; ``Authorization`` and ``Cookie`` values to the end of the line;
- query parameters ``?key=``, ``&sig=``, ``&code=`` (the credential names above in a query too);
- the password in a URL (``https://user:X@host``), or the whole user part when there is no
  password (``https://TOKEN@host``);
- webhook secrets: a Telegram bot token (``bot123456:ABC…``, in an ``api.telegram.org`` URL
  or anywhere), the path of a Slack webhook (``hooks.slack.com/services/T…/B…/X``), the token
  of a Discord webhook (``discord.com/api/webhooks/<id>/X``, ``discordapp.com`` too);
- BIP-39 mnemonics: 12 or more consecutive words of the English BIP-39 list.
"""

from __future__ import annotations

import itertools
import re

from resilient_trading._bip39 import WORDS

__all__ = ["REDACTED", "redact", "safe_text"]

REDACTED = "<redacted>"

# 64 or more hex digits: private keys, signature halves (r, s), raw signatures.
_HEX_RUN = re.compile(r"[0-9a-fA-F]{64}")  # a cheap first look (no optional prefix)
_LONG_HEX = re.compile(r"(?:0[xX])?(?<![0-9a-fA-F])[0-9a-fA-F]{64,}")

# A credential-like name. Found fast by the stems below (plain substring search on the lowered
# text), then checked in full: the name, an optional (escaped) quote, and a separator.
_STEMS = (
    *("secret", "pass", "pwd", "token", "sig", "credential", "mnemonic", "key", "seed"),
    *("session", "auth", "cookie", "code"),
)
_NAME = re.compile(
    r"""(?ix)
    [\w-]*?(?:secret|passw(?:or)?d|passphrase|token|signature|credential|mnemonic|
              api[-_]?key|access[-_]?key|private[-_]?key|priv[-_]?key|
              seed[-_]?phrase|session[-_]?id)[\w-]*
  | (?:proxy-)?authorization | (?:set-)?cookie
  | [\w-]*?auth(?:entication)?
    """
)
_NAME_MAX = 64  # longer words are not credential names (and a bound keeps redact() linear)
_QUERY_NAMES = frozenset({"key", "sig", "code", "pass", "pwd"})  # only right after ? & ;
_QUERY_STARTS = ("?", "&", ";")
_WORD = re.compile(r"[\w-]*")
_WORD_CHAR = re.compile(r"[\w-]")
_SEPARATOR = re.compile(r"""(\\*["'])?(?:\s*[:=]\s*|(?(1)\s*,\s*|(?!)))""")
_TO_END_OF_LINE = re.compile(r"(?i)(?:proxy-)?authorization|(?:set-)?cookie")
_SCHEME = re.compile(
    r"(?i)(?:bearer|basic|token|apikey|api-key|digest|bot|key|oauth|negotiate|ntlm|dpop|"
    r"hmac[\w-]*|aws4-hmac-sha256)[ \t]+[^\s,;'\"\])}&#]+"
)
_BARE = re.compile(r"""[^\s,;'"\])}&#]+""")
_LINE = re.compile(r"[^\r\n]*")  # to the end of the line, quotes included: never less
# A quoted value ends at a quote no backslash escapes, at whatever depth of escaping (text
# quoted again, a repr of a repr, doubles the backslashes before an inner quote), and that no
# word character follows (``"x | b="y"``: the quote before ``y`` opens, it does not close).
_QUOTES = ('"', "'")
_QUOTED = {
    q: re.compile(q + r"(?:[^" + q + r"\\]|\\+[^\\]|" + q + r"(?=\w))*" + q, re.S) for q in _QUOTES
}
_BACKSLASHES = re.compile(r"\\+.", re.S)
# An escaped string closes with the same run of backslashes as it opened with, exactly.
_ESCAPED = re.compile(r"""(\\+)(["']).*?(?<!\\)\1\2(?!\w)""", re.S)
_ESCAPED_OPEN = re.compile(r"""\\+["']""")
_CLOSERS = {"[": "]", "{": "}", "(": ")"}

# scheme://user:password@host (or scheme://token@host).
_URL_USERINFO = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]{0,31}://)([^\s/?#@:'\"<>]{0,512})(:[^\s/?#'\"<>]{0,512})?@"
)

# Webhook URLs whose path is the secret. Telegram: ``bot<id>:<token>`` (in its API's URLs the
# whole path segment, elsewhere a token of 8+ characters); Slack: everything after the host;
# Discord: the token after the webhook's id.
_WEBHOOK = re.compile(
    r"(?i)(api\.telegram\.org/(?:file/)?)bot[^\s/?#'\"<>\\]+"
    r"|(?<![\w-])bot\d+:[^\s/?#'\"<>\\,;()\[\]{}]{8,}"
    r"|(hooks\.slack(?:-gov)?\.com/)[^\s?#'\"<>\\]+"
    r"|(discord(?:app)?\.com/api(?:/v\d+)?/webhooks/[^\s/?#'\"<>\\]+/)[^\s/?#'\"<>\\]+"
)
_BOT_TOKEN = re.compile(r"(?i)bot\d+:")  # a first look for a bare Telegram token

_MNEMONIC_RUN = re.compile(r"(?<![\w-])[a-z]{3,8}(?:[ \t]+[a-z]{3,8}){11,}(?![\w-])")
_LOWER_WORD = re.compile(r"[a-z]+")


def _balanced(text: str, start: int) -> int:
    """End of the bracketed value opening at ``start``; the end of ``text`` when unclosed."""
    stack = [_CLOSERS[text[start]]]
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c in _QUOTES:
            m = _QUOTED[c].match(text, i)
            if m is None:
                return n
            i = m.end()
            continue
        if c == "\\":
            i = _BACKSLASHES.match(text, i).end()  # type: ignore[union-attr]  # an escape
            continue
        if c in _CLOSERS:
            stack.append(_CLOSERS[c])
        elif c == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
        i += 1
    return n


def _value_end(text: str, i: int, name: str) -> int:
    """Where the value of the credential field ``name`` that starts at ``i`` ends."""
    if i >= len(text):
        return i
    c = text[i]
    if c == "\\":
        m = _ESCAPED.match(text, i)
        if m is not None:
            return m.end()
        if _ESCAPED_OPEN.match(text, i):
            return len(text)  # an escaped string cut short: everything after is its value
    if c in _QUOTES:
        m = _QUOTED[c].match(text, i)
        return m.end() if m is not None else len(text)
    if c in _CLOSERS:
        return _balanced(text, i)
    if _TO_END_OF_LINE.fullmatch(name):
        return _LINE.match(text, i).end()  # type: ignore[union-attr]  # always matches
    m = _SCHEME.match(text, i) or _BARE.match(text, i)
    return m.end() if m is not None else i


def _name_starts(text: str) -> list[int]:
    low = text.lower()
    if len(low) != len(text):  # a character whose lower case is longer: keep the indices
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    starts = set()
    for stem in _STEMS:
        i = low.find(stem)
        while i != -1:
            before = text[max(0, i - _NAME_MAX) : i][::-1]  # the name's start, read backwards
            s = i - _WORD.match(before).end()  # type: ignore[union-attr]  # always matches
            if s == 0 or not _WORD_CHAR.match(text, s - 1):
                starts.add(s)  # (a longer "name" is no credential name: skip it)
            i = low.find(stem, i + len(stem))
    return sorted(starts)


def _redact_fields(text: str) -> str:
    out: list[str] = []
    cursor = 0
    for start in _name_starts(text):
        if cursor == len(text):
            break
        end = _WORD.match(text, start).end()  # type: ignore[union-attr]  # always matches
        name = text[start:end]
        if not _NAME.fullmatch(name) and not (
            name.lower() in _QUERY_NAMES and start > 0 and text[start - 1] in _QUERY_STARTS
        ):
            continue
        sep = _SEPARATOR.match(text, end)
        if sep is None:
            continue
        value_end = _value_end(text, sep.end(), name)
        if value_end == sep.end():
            continue  # a name with nothing after it
        if sep.end() <= cursor:
            # A name inside a value already redacted (quotes can nest ambiguously): its own
            # value may run further, and then the redacted stretch grows to cover it.
            cursor = max(cursor, value_end)
            continue
        out.append(text[cursor : sep.end()])
        out.append(REDACTED)
        cursor = value_end
    if not out:
        return text
    out.append(text[cursor:])
    return "".join(out)


def _redact_userinfo(m: re.Match[str]) -> str:
    if m.group(3) is None:
        return f"{m.group(1)}{REDACTED}@"
    return f"{m.group(1)}{m.group(2)}:{REDACTED}@"


def _may_hold_webhook(text: str) -> bool:
    """A cheap first look (substring searches; the regex only after a ``bot``)."""
    low = text.lower()
    return (
        "hooks.slack" in low
        or "/webhooks/" in low
        or ("bot" in low and ("api.telegram.org/" in low or _BOT_TOKEN.search(text) is not None))
    )


def _redact_webhook(m: re.Match[str]) -> str:
    return f"{m.group(1) or m.group(2) or m.group(3) or ''}{REDACTED}"


def _may_hold_mnemonic(text: str) -> bool:
    """A cheap first look: 12 whitespace-separated BIP-39 words in a row."""
    run = 0
    for token in _LOWER_WORD.findall(text):
        if token in WORDS:
            run += 1
            if run >= 12:
                return True
        else:
            run = 0
    return False


def _redact_mnemonic(m: re.Match[str]) -> str:
    """Replace each run of 12+ BIP-39 words inside a run of short lowercase words."""
    text = m.group(0)
    out: list[str] = []
    cursor = 0
    words = _LOWER_WORD.finditer(text)
    for is_word, group in itertools.groupby(words, key=lambda w: w.group(0) in WORDS):
        run = list(group)
        if is_word and len(run) >= 12:
            out.append(text[cursor : run[0].start()])
            out.append(REDACTED)
            cursor = run[-1].end()
    out.append(text[cursor:])
    return "".join(out)


def redact(text: str) -> str:
    """Return ``text`` with every secret replaced by ``<redacted>``.

    See the module docstring for the shapes recognised. Ordinary text (order ids, prices,
    coins, wallet addresses, cloids) is left alone.

    >>> redact("Authorization: Bearer abc.def")
    'Authorization: <redacted>'
    >>> redact("GET https://bob:hunter2@api.example.com/v1?key=abc&coin=BTC")
    'GET https://bob:<redacted>@api.example.com/v1?key=<redacted>&coin=BTC'
    """
    if not isinstance(text, str):
        raise TypeError(f"redact() takes a str, got {type(text).__name__}")
    text = _redact_fields(text)
    if "://" in text:
        text = _URL_USERINFO.sub(_redact_userinfo, text)
    if _may_hold_webhook(text):
        text = _WEBHOOK.sub(_redact_webhook, text)
    if _HEX_RUN.search(text):
        text = _LONG_HEX.sub(REDACTED, text)
    if _may_hold_mnemonic(text):
        text = _MNEMONIC_RUN.sub(_redact_mnemonic, text)
    return text


def _as_text(obj: object) -> str:
    if isinstance(obj, str):
        return obj
    try:
        return str(obj)
    except Exception:  # a broken __str__: show the repr instead
        try:
            return repr(obj)
        except Exception:  # a broken __repr__ too: show the type
            return f"<unprintable {type(obj).__name__}>"


def safe_text(obj: object, limit: int | None = None) -> str:
    """``str(obj)`` with secrets redacted, *then* cut to at most ``limit`` characters.

    Use it wherever foreign text (an exception, a response body, a header) goes into a message,
    a log line, a stored record or an event. It never raises: an object whose ``__str__`` fails
    is shown by its ``repr``, or by its type.

    Args:
        obj: Anything.
        limit: The most characters to return (a cut text ends with ``…``); ``None`` for no cut.

    >>> safe_text("key=" + "ab" * 40 + " and more", 20)
    'key=<redacted> and …'
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
    text = redact(_as_text(obj))
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
