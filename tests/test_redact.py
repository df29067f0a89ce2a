"""redact() and safe_text(): no secret survives, in any shape, nested in any other, cut anywhere.

Each shape the redaction promises has its own case below, so deleting any rule alternative
(a credential stem, a value form, the ``Bearer|Basic`` scheme branch, the URL rule, the hex
rule, the mnemonic rule, the query-only names) fails a test; the hypothesis tests then nest
the shapes inside each other and inside reprs of dicts, lists, exceptions and JSON.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilient_trading as rt
from resilient_trading import redact, safe_text
from resilient_trading._bip39 import WORDS
from resilient_trading._redact import _may_hold_mnemonic

# A secret is a marker plus random text, so it cannot be mistaken for the words around it.
SECRET_ALPHABET = string.ascii_letters + string.digits + "._~-"
secrets_ = st.text(alphabet=SECRET_ALPHABET, min_size=6, max_size=30).map(lambda s: "S3cr" + s)
hex_keys = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
mnemonics = st.lists(st.sampled_from(sorted(WORDS)), min_size=12, max_size=24).map(" ".join)

SCHEMES = ["Bearer", "Basic", "Token", "ApiKey", "bearer", "Digest", "HMAC-SHA256"]
AUTH_HEADERS = ["Authorization", "authorization", "AUTHORIZATION", "Proxy-Authorization"]
FIELD_NAMES = [
    "api_key",
    "apiKey",
    "API-KEY",
    "x-api-key",
    "X-MBX-APIKEY",
    "secret",
    "secret_key",
    "secretKey",
    "api_secret",
    "client_secret",
    "password",
    "passwd",
    "passphrase",
    "OK-ACCESS-PASSPHRASE",
    "KC-API-PASSPHRASE",
    "token",
    "access_token",
    "refresh_token",
    "X-Auth-Token",
    "private_key",
    "privateKey",
    "privkey",
    "priv_key",
    "HYPERLIQUID_PRIVATE_KEY",
    "signature",
    "X-Signature",
    "credentials",
    "access_key",
    "AWSAccessKeyId",
    "mnemonic",
    "seed_phrase",
    "session_id",
    "x-auth",
    "auth",
    "authentication",
    "cookie",
    "Set-Cookie",
]
QUERY_NAMES = ["key", "sig", "code", "pass", "pwd", "access_key", "api_key", "signature", "token"]

Shape = Callable[[str], str]

# --- every shape, one by one ----------------------------------------------------------------

SHAPES: dict[str, Shape] = {
    "header Token": lambda s: f"Authorization: Token {s}",
    "header ApiKey": lambda s: f"Authorization: ApiKey {s}",
    "header Bearer": lambda s: f"Authorization: Bearer {s}",
    "header Basic": lambda s: f"Authorization: Basic {s}",
    "proxy header": lambda s: f"Proxy-Authorization: Basic {s}",
    "header dict, list value": lambda s: repr({"Authorization": [f"Bearer {s}"]}),
    "header dict, nested list": lambda s: repr({"Authorization": [[f"Bearer {s}"]]}),
    "header tuples": lambda s: repr([("Authorization", f"Bearer {s}")]),
    "scheme in another field": lambda s: f"X-Auth-Token: Bearer {s}",
    "scheme, api key field": lambda s: f"api_key: ApiKey {s} (from config)",
    "cookie, later pair": lambda s: f"Cookie: theme=dark; sid={s}; lang=en",
    "set-cookie": lambda s: f"Set-Cookie: session={s}; Path=/; HttpOnly",
    "escaped json": lambda s: json.dumps(json.dumps({"api_key": s})),
    "escaped json by hand": lambda s: '{\\"api_key\\": \\"' + s + '\\"}',
    "escaped json cut short": lambda s: '{\\"api_key\\": \\"' + s,
    "json": lambda s: json.dumps({"secret_key": s, "coin": "BTC"}),
    "python repr": lambda s: repr({"secretKey": s}),
    "api_secret=": lambda s: f"api_secret={s}",
    "passphrase header": lambda s: f"OK-ACCESS-PASSPHRASE: {s}",
    "kucoin passphrase": lambda s: f"KC-API-PASSPHRASE={s}",
    "password in url": lambda s: f"https://user:{s}@api.example.com/v1",
    "redis password": lambda s: f"redis://:{s}@127.0.0.1:6379/0",
    "token as url user": lambda s: f"https://{s}@github.com/org/repo.git",
    "?access_key=": lambda s: f"GET https://api.example.com/v1/x?access_key={s}&coin=BTC",
    "?key=": lambda s: f"GET /v1/x?key={s}",
    "&signature=": lambda s: f"GET /v1/x?coin=BTC&signature={s}",
    "&sig=": lambda s: f"GET /v1/x?coin=BTC&sig={s}",
    ";code=": lambda s: f"GET /cb;code={s}",
    "signature object": lambda s: repr({"signature": {"r": "0x01", "s": s, "v": 27}}),
    "quoted single": lambda s: f"token='{s}'",
    "quoted double with escapes": lambda s: f'password="a\\"{s}"',
    "unclosed quote": lambda s: f'password="{s}',
    "unclosed object": lambda s: f"credentials={{'user': 'bob', 'key': '{s}'",
    "env line": lambda s: f"HYPERLIQUID_PRIVATE_KEY={s}",
    "yaml": lambda s: f"mnemonic: {s}",
    "telegram bot url": lambda s: f"POST https://api.telegram.org/bot123456789:{s}/sendMessage",
    "telegram file url": lambda s: f"GET https://api.telegram.org/file/bot12345:{s}/photos/a.jpg",
    "telegram token": lambda s: f"telegram says 401 for bot123456789:{s}",
    "slack webhook": lambda s: f"POST https://hooks.slack.com/services/T0AB12CD3/B0AB12CD3/{s}",
    "slack workflow": lambda s: f"https://hooks.slack.com/workflows/T0AB12CD3/A0AB/{s}",
    "discord webhook": lambda s: f"POST https://discord.com/api/webhooks/1234567890123/{s}",
    "discordapp webhook": lambda s: f"https://discordapp.com/api/v10/webhooks/42/{s}/slack",
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_each_shape_is_redacted(shape: Shape) -> None:
    secret = "S3crXq7.zz-9"
    out = redact(shape(secret))
    assert secret not in out
    assert "<redacted>" in out


@pytest.mark.parametrize("name", FIELD_NAMES)
@pytest.mark.parametrize("form", ["{n}: {s}", "{n}={s}", "'{n}': '{s}'", '"{n}": "{s}"'])
def test_every_credential_name_in_every_form(name: str, form: str) -> None:
    secret = "S3crXq7.zz-9"
    assert secret not in redact("headers " + form.format(n=name, s=secret) + " end")


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_every_query_name(name: str) -> None:
    secret = "S3crXq7.zz-9"
    for sep in "?&;":
        out = redact(f"https://h.example/p{sep}{name}={secret}&coin=BTC")
        assert secret not in out
        assert "coin=BTC" in out


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("header", AUTH_HEADERS)
def test_authorization_schemes(scheme: str, header: str) -> None:
    out = redact(f"{header}: {scheme} S3crXq7, then more")
    assert "S3crXq7" not in out


@pytest.mark.parametrize("scheme", ["Bearer", "Basic", "Token", "ApiKey", "Digest", "HMAC-SHA256"])
def test_scheme_values_outside_authorization(scheme: str) -> None:
    # Authorization runs to the end of the line anyway; here the scheme rule alone must work.
    out = redact(f"x-auth-token: {scheme} S3crXq7 (retrying)")
    assert "S3crXq7" not in out
    assert "(retrying)" in out


@pytest.mark.parametrize("prefix", ["", "0x", "0X"])
@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_hex_private_keys(prefix: str, case: Callable[[str], str]) -> None:
    key = case("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
    out = redact(f"signing with {prefix}{key}.")
    assert key not in out
    assert out == "signing with <redacted>."


def test_mnemonic_is_redacted_and_eleven_words_are_not() -> None:
    words = sorted(WORDS)[100:124]
    phrase = " ".join(words[:12])
    assert redact(f"seed phrase was {phrase}, keep it safe") == (
        "seed phrase was <redacted>, keep it safe"
    )
    eleven = " ".join(words[:11])
    assert redact(f"{eleven} Zz") == f"{eleven} Zz"


@given(words=st.lists(st.sampled_from(sorted(WORDS)), min_size=22, max_size=22))
def test_the_mnemonic_first_look_wants_twelve_words_in_a_row(words: list[str]) -> None:
    # The cheap first look must let every mnemonic through, and nothing much else: eleven
    # BIP-39 words, another word, eleven more is no mnemonic (and costs no regex scan).
    assert _may_hold_mnemonic(" ".join(words[:12]))
    assert _may_hold_mnemonic("Zz " + " ".join(words[:12]) + " Zz")
    assert _may_hold_mnemonic(" ".join(words[:11]) + " qqq " + " ".join(words[11:])) is False
    assert _may_hold_mnemonic(" ".join(words[:11])) is False
    assert (
        _may_hold_mnemonic("order 123 on BTC failed: Insufficient margin to place order.") is False
    )


def test_only_the_bip39_run_of_a_lowercase_run_is_redacted() -> None:
    words = sorted(WORDS)[100:124]
    other = "qqq " * 12  # twelve short lowercase words that are not BIP-39 words
    text = other + " ".join(words[:12]) + " qqq"
    assert redact(text) == other + "<redacted> qqq"
    # Eleven BIP-39 words after other lowercase words are no mnemonic, even when a real
    # mnemonic elsewhere in the text lets the cheap first look through.
    tail = other + " ".join(words[12:23])
    assert redact(" ".join(words[:12]) + ", " + tail) == "<redacted>, " + tail


def test_quotes_that_nest_ambiguously_never_uncover_a_secret() -> None:
    # An unclosed quote swallows the next name's opening quote; that name's value must still
    # be covered (found by hypothesis).
    text = 'password="S3crAAA | {"secret_key": "S3crBBB", "coin": "BTC"}'
    out = redact(text)
    assert "S3crAAA" not in out
    assert "S3crBBB" not in out
    text = "Authorization: Token S3crAAA | token='S3crBBB'"
    assert "S3crBBB" not in redact(text)
    # A name wholly inside a redacted value, whose own value runs past it.
    text = """password="x token='S3crAAA" S3crBBB' end"""
    assert "S3crBBB" not in redact(text)


# --- exactly the value: what follows a secret is kept, what precedes it too -------------------
# A redaction that runs on past its value hides the text a person needs (and one that stops
# early leaks): each shape, followed by ordinary text, gives exactly this.

SHAPES_REDACTED: dict[str, str] = {
    "header Token": "Authorization: <redacted>",
    "header ApiKey": "Authorization: <redacted>",
    "header Bearer": "Authorization: <redacted>",
    "header Basic": "Authorization: <redacted>",
    "proxy header": "Proxy-Authorization: <redacted>",
    "header dict, list value": "{'Authorization': <redacted>} | coin=BTC",
    "header dict, nested list": "{'Authorization': <redacted>} | coin=BTC",
    "header tuples": "[('Authorization', <redacted>)] | coin=BTC",
    "scheme in another field": "X-Auth-Token: <redacted> | coin=BTC",
    "scheme, api key field": "api_key: <redacted> (from config) | coin=BTC",
    "cookie, later pair": "Cookie: <redacted>",
    "set-cookie": "Set-Cookie: <redacted>",
    "escaped json": '"{\\"api_key\\": <redacted>}" | coin=BTC',
    "escaped json by hand": '{\\"api_key\\": <redacted>} | coin=BTC',
    "escaped json cut short": '{\\"api_key\\": <redacted>',
    "json": '{"secret_key": <redacted>, "coin": "BTC"} | coin=BTC',
    "python repr": "{'secretKey': <redacted>} | coin=BTC",
    "api_secret=": "api_secret=<redacted> | coin=BTC",
    "passphrase header": "OK-ACCESS-PASSPHRASE: <redacted> | coin=BTC",
    "kucoin passphrase": "KC-API-PASSPHRASE=<redacted> | coin=BTC",
    "password in url": "https://user:<redacted>@api.example.com/v1 | coin=BTC",
    "redis password": "redis://:<redacted>@127.0.0.1:6379/0 | coin=BTC",
    "token as url user": "https://<redacted>@github.com/org/repo.git | coin=BTC",
    "?access_key=": "GET https://api.example.com/v1/x?access_key=<redacted>&coin=BTC | coin=BTC",
    "?key=": "GET /v1/x?key=<redacted> | coin=BTC",
    "&signature=": "GET /v1/x?coin=BTC&signature=<redacted> | coin=BTC",
    "&sig=": "GET /v1/x?coin=BTC&sig=<redacted> | coin=BTC",
    ";code=": "GET /cb;code=<redacted> | coin=BTC",
    "signature object": "{'signature': <redacted>} | coin=BTC",
    "quoted single": "token=<redacted> | coin=BTC",
    "quoted double with escapes": "password=<redacted> | coin=BTC",
    "unclosed quote": "password=<redacted>",
    "unclosed object": "credentials=<redacted>",
    "env line": "HYPERLIQUID_PRIVATE_KEY=<redacted> | coin=BTC",
    "yaml": "mnemonic: <redacted> | coin=BTC",
    "telegram bot url": "POST https://api.telegram.org/<redacted>/sendMessage | coin=BTC",
    "telegram file url": "GET https://api.telegram.org/file/<redacted>/photos/a.jpg | coin=BTC",
    "telegram token": "telegram says 401 for <redacted> | coin=BTC",
    "slack webhook": "POST https://hooks.slack.com/<redacted> | coin=BTC",
    "slack workflow": "https://hooks.slack.com/<redacted> | coin=BTC",
    "discord webhook": "POST https://discord.com/api/webhooks/1234567890123/<redacted> | coin=BTC",
    "discordapp webhook": "https://discordapp.com/api/v10/webhooks/42/<redacted>/slack | coin=BTC",
}


@pytest.mark.parametrize("name", list(SHAPES), ids=list(SHAPES))
def test_each_shape_redacts_exactly_its_value(name: str) -> None:
    assert redact(SHAPES[name]("S3crXq7.zz-9") + " | coin=BTC") == SHAPES_REDACTED[name]


VALUES_REDACTED: list[tuple[str, str]] = [
    # lists and tuples as values, for any credential name; the next field is kept
    (
        "{'api_key': ['S3crA', 'S3crB'], 'coin': 'BTC'}",
        "{'api_key': <redacted>, 'coin': 'BTC'}",
    ),
    ('token=("S3crA", 1) rest', "token=<redacted> rest"),
    ("token=[[S3crA], (S3crB)] rest", "token=<redacted> rest"),
    # a closer inside a quoted string or after a backslash does not close the value
    ("secret={'a': ']}', 'b': 'S3crB'} rest", "secret=<redacted> rest"),
    ('token={"a": "x\\"]", "b": "S3crB"} rest', "token=<redacted> rest"),
    ("token=[a\\]S3crB] rest", "token=<redacted> rest"),
    ("token=[\\'S3crA\\'] rest", "token=<redacted> rest"),
    ("token=['S3crA'] rest", "token=<redacted> rest"),  # a closer right after a quote
    ("token=[S3crA\\x] rest", "token=<redacted> rest"),  # a closer right after an escape
    ("token=[AXB, S3crB] rest", "token=<redacted> rest"),  # bare words inside
    # a quote followed by a word character does not close a quoted value
    ('token="S3crA"S3crB" rest', "token=<redacted> rest"),
    ("secret=XS3crA rest", "secret=<redacted> rest"),
    # a name inside a value whose own value starts where that value stopped
    ("secret=xtoken='S3crB' rest", "secret=<redacted> rest"),
    # unclosed or mismatched brackets and quotes: everything after is the value
    ("token=['S3crB rest", "token=<redacted>"),
    ("token=[(S3crB]) rest", "token=<redacted>"),
    # escaped quotes, at one and two levels of escaping
    ('api_key: \\"S3crA\\", next', "api_key: <redacted>, next"),
    ('api_key: \\\\"S3crA\\\\", next', "api_key: <redacted>, next"),
    # bare values stop at a separator
    ("secret=S3crA, coin=BTC", "secret=<redacted>, coin=BTC"),
    ("secret=S3crA; coin=BTC", "secret=<redacted>; coin=BTC"),
    ("secret: Bearer S3crA, coin=BTC", "secret: <redacted>, coin=BTC"),
    # several fields in one text; a comma separates only after a quoted name
    (
        "a token: S3crA and a password: S3crB end",
        "a token: <redacted> and a password: <redacted> end",
    ),
    ('"secret", "S3crA", "coin"', '"secret", <redacted>, "coin"'),
    ("'secret' , 'S3crA' rest", "'secret' , <redacted> rest"),
    ("secret , plain words", "secret , plain words"),
    # a query name right at the start; a query name needs its ? & or ;
    ("?key=S3crA&coin=BTC", "?key=<redacted>&coin=BTC"),
    ("code=200;", "code=200;"),
    ("key=BTC&", "key=BTC&"),
    # a name with nothing after it
    ("secret=", "secret="),
    ("secret= ", "secret= "),
]


@pytest.mark.parametrize(("text", "expected"), VALUES_REDACTED, ids=[t for t, _ in VALUES_REDACTED])
def test_values_are_redacted_exactly(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("İ API_KEY=S3crA end", "İ API_KEY=<redacted> end"),
        ("İİİ token=S3crA end", "İİİ token=<redacted> end"),
        ("İstanbul, Authorization: Bearer S3crA", "İstanbul, Authorization: <redacted>"),
        ("İ" * 20 + " token=S3crA end", "İ" * 20 + " token=<redacted> end"),
    ],
)
def test_a_letter_whose_lower_case_is_longer_shifts_nothing(text: str, expected: str) -> None:
    # "İ".lower() is two characters: names must still be found at their own index.
    assert redact(text) == expected


def test_url_without_credentials_is_kept() -> None:
    text = "POST https://api.hyperliquid.xyz/exchange failed; see https://x.example/a@b"
    assert redact(text) == text


@given(secret=secrets_, shape=st.sampled_from(list(SHAPES.values())))
def test_shapes_with_any_secret(secret: str, shape: Shape) -> None:
    assert secret not in redact(shape(secret))


# --- nested shapes ------------------------------------------------------------------------------

Piece = tuple[str, tuple[str, ...]]  # a text and the secrets it holds


@st.composite
def _leaf(draw: st.DrawFn) -> Piece:
    kind = draw(st.sampled_from(["shape", "field", "hex", "mnemonic", "cookies"]))
    if kind == "hex":
        key = draw(hex_keys)
        return draw(st.sampled_from(["", "0x"])) + key, (key,)
    if kind == "mnemonic":
        phrase = draw(mnemonics)
        return phrase, (phrase,)
    if kind == "cookies":
        values = draw(st.lists(secrets_, min_size=1, max_size=4))
        pairs = "; ".join(f"c{i}={v}" for i, v in enumerate(values))
        return f"Cookie: {pairs}", tuple(values)
    secret = draw(secrets_)
    if kind == "field":
        name = draw(st.sampled_from(FIELD_NAMES))
        form = draw(st.sampled_from(["{n}: {s}", "{n}={s}", "'{n}': '{s}'", '"{n}": "{s}"']))
        return form.format(n=name, s=secret), (secret,)
    return draw(st.sampled_from(list(SHAPES.values())))(secret), (secret,)


def _wrap(children: st.SearchStrategy[Piece]) -> st.SearchStrategy[Piece]:
    def dict_repr(p: Piece) -> Piece:
        return repr({"headers": p[0], "status": 400}), p[1]

    def list_repr(p: Piece) -> Piece:
        return repr([p[0], 42, None]), p[1]

    def exc_repr(p: Piece) -> Piece:
        return repr(ValueError(p[0], 400)), p[1]

    def exc_str(p: Piece) -> Piece:
        return str(RuntimeError(p[0])), p[1]

    def json_body(p: Piece) -> Piece:
        return json.dumps({"body": p[0], "coin": "BTC"}), p[1]

    def sentence(p: Piece) -> Piece:
        return f"order 123 on BTC failed: {p[0]}\nretrying in 2s", p[1]

    def pair(ps: tuple[Piece, Piece]) -> Piece:
        return f"{ps[0][0]} | {ps[1][0]}", ps[0][1] + ps[1][1]

    one = st.sampled_from([dict_repr, list_repr, exc_repr, exc_str, json_body, sentence])
    return st.one_of(
        st.tuples(one, children).map(lambda t: t[0](t[1])),
        st.tuples(children, children).map(pair),
    )


nested = st.recursive(_leaf(), _wrap, max_leaves=6)


@settings(max_examples=300)
@given(nested)
def test_no_secret_survives_any_nesting(piece: Piece) -> None:
    text, secrets = piece
    out = redact(text)
    for secret in secrets:
        assert secret not in out, (text, out)


# --- ordinary text is left alone ----------------------------------------------------------------

ORDINARY_MESSAGES = [
    "Order could not immediately match against any resting orders. asset=0",
    "Post only order would have immediately matched, bbo was 42000.5. asset=3",
    "Reduce only order would increase position. asset=1",
    "Insufficient margin to place order. asset=0",
    "Price must be divisible by tick size. asset=0",
    "Order must have minimum value of $10. asset=0",
    "Order has invalid price.",
    "Order was never placed, already canceled, or filled. asset=4",
    "Invalid nonce: duplicate nonce 1791399877207",
    "HTTP 429 Too Many Requests",
    "status code 502 from the gateway",
    "error code: 500",
    "signal=buy",
    "keyboard: us",
    "passive=True",
    "seed=42",
    "author: bob",
    "session: asia",
]
ordinary_piece = st.one_of(
    st.sampled_from(ORDINARY_MESSAGES),
    st.sampled_from(["BTC", "ETH", "PURR", "HYPE", "SOL", "buy", "sell", "Gtc", "Ioc", "Alo"]),
    st.integers(min_value=0, max_value=10**13).map(str),
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False).map(str),
    st.text(alphabet="0123456789abcdef", min_size=40, max_size=40).map(lambda h: "0x" + h),
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).map(lambda h: "0x" + h),
    st.builds(
        lambda oid, px, coin: json.dumps(
            {"coin": coin, "oid": oid, "limitPx": px, "sz": "0.01", "side": "B", "tif": "Gtc"}
        ),
        st.integers(min_value=1, max_value=10**12),
        st.decimals(min_value=1, max_value=10**5, places=1).map(str),
        st.sampled_from(["BTC", "ETH"]),
    ),
)


@given(st.lists(ordinary_piece, min_size=1, max_size=8).map(" ".join))
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


# --- safe_text: redact first, then cut -----------------------------------------------------------


@given(
    key=hex_keys,
    prefix=st.sampled_from(["", "0x"]),
    before=st.integers(min_value=0, max_value=400),
    limit=st.integers(min_value=1, max_value=500),
)
def test_a_key_cut_anywhere_never_survives(key: str, prefix: str, before: int, limit: int) -> None:
    text = "x" * before + prefix + key + " tail"
    out = safe_text(text, limit)
    assert len(out) <= limit
    for i in range(len(key) - 15):  # not even 16 digits of it
        assert key[i : i + 16] not in out


@given(phrase=mnemonics, before=st.integers(min_value=0, max_value=300))
def test_a_mnemonic_cut_anywhere_never_survives(phrase: str, before: int) -> None:
    words = phrase.split()
    out = safe_text("x" * before + " " + phrase + " tail", before + 40)
    for i in range(len(words) - 3):
        assert " ".join(words[i : i + 4]) not in out


def test_safe_text_cuts_with_an_ellipsis() -> None:
    assert safe_text("abcdef", 4) == "abc…"
    assert safe_text("abc", 4) == "abc"
    assert safe_text("abcd", 4) == "abcd"
    assert safe_text("abc", 1) == "…"
    assert safe_text("a", 1) == "a"
    assert safe_text(12345) == "12345"


def test_safe_text_never_raises_on_a_broken_object() -> None:
    class BrokenStr:
        def __str__(self) -> str:
            raise RuntimeError("boom")

        def __repr__(self) -> str:
            return "BrokenStr(token=S3crXq7)"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("boom")

        def __repr__(self) -> str:
            raise RuntimeError("boom")

    assert safe_text(BrokenStr()) == "BrokenStr(token=<redacted>)"
    assert safe_text(Broken()) == "<unprintable Broken>"


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_safe_text_checks_its_limit(bad: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        safe_text("x", bad)  # type: ignore[arg-type]


def test_redact_takes_only_text() -> None:
    with pytest.raises(TypeError, match=r"redact\(\) takes a str, got bytes"):
        redact(b"token=x")  # type: ignore[arg-type]


def test_public_names() -> None:
    assert rt.safe_text is safe_text
    assert rt.redact is redact


# --- cost --------------------------------------------------------------------------------------

ADVERSARIAL = {
    "one long word of stems": "token" * 20_000,
    "many names": "secret: a, " * 9_000,
    "unclosed escaped strings": "token=\\'x " * 10_000,
    "dotted scheme": "a." * 50_000 + "://",
    "many schemes": "a://" * 25_000,
    "unclosed braces": "token={" * 14_000,
    "unclosed quotes": 'token="' * 14_000,
    "hex runs of 63": ("ab" * 31 + "a ") * 1_500,
    "bip39 words": "abandon " * 12_500,
    "backslashes": "token=" + "\\" * 100_000,
}


@pytest.mark.parametrize("text", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_redact_stays_linear_on_hostile_input(text: str) -> None:
    # ~100 KB each: a quadratic rule would take minutes; linear ones take milliseconds.
    start = time.perf_counter()
    redact(text)
    assert time.perf_counter() - start < 2.0


# --- webhook URLs whose path is the secret (#17 review, item 7) ---------------------------------

_TOKEN_CHARS = string.ascii_letters + string.digits + "_-"
telegram_tokens = st.builds(
    lambda bot, secret: f"{bot}:{secret}",
    st.integers(min_value=10**5, max_value=10**10),
    st.text(alphabet=_TOKEN_CHARS, min_size=35, max_size=35),
)
slack_paths = st.builds(
    lambda team, hook, secret: f"T{team}/B{hook}/{secret}",
    st.text(alphabet=string.ascii_uppercase + string.digits, min_size=8, max_size=10),
    st.text(alphabet=string.ascii_uppercase + string.digits, min_size=8, max_size=10),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=24, max_size=24),
)
discord_tokens = st.text(alphabet=_TOKEN_CHARS, min_size=60, max_size=68)

# (the webhook URL, the secret in it, what must stay visible)
webhook_urls = st.one_of(
    telegram_tokens.map(
        lambda t: (f"https://api.telegram.org/bot{t}/sendMessage", t, "api.telegram.org")
    ),
    slack_paths.map(
        lambda p: (f"https://hooks.slack.com/services/{p}", p.split("/")[2], "hooks.slack.com")
    ),
    st.tuples(st.integers(min_value=10**16, max_value=10**19), discord_tokens).map(
        lambda t: (
            f"https://discord.com/api/webhooks/{t[0]}/{t[1]}",
            t[1],
            f"webhooks/{t[0]}/",
        )
    ),
    st.tuples(st.integers(min_value=1, max_value=10**19), discord_tokens).map(
        lambda t: (f"https://discordapp.com/api/webhooks/{t[0]}/{t[1]}?wait=true", t[1], "wait")
    ),
)
# How a URL reaches a message: an error's text, a repr, a JSON body, a log line, a header.
url_contexts: list[Callable[[str], str]] = [
    lambda u: f"<urlopen error [Errno 111] Connection refused> POST {u}",
    lambda u: repr({"url": u, "status": 502}),
    lambda u: json.dumps(json.dumps({"webhook": u})),
    lambda u: f"HTTPError: 404 Not Found for url: {u}\nretrying",
    lambda u: repr(RuntimeError(f"({u!r}, 500)")),
    lambda u: f"Location: {u.upper()}",
]


@settings(max_examples=200)
@given(found=webhook_urls, context=st.sampled_from(url_contexts))
def test_a_webhook_secret_never_survives(found: tuple[str, str, str], context: Shape) -> None:
    url, secret, visible = found
    text = context(url)
    out = redact(text)
    assert secret not in out and secret.upper() not in out, (text, out)
    assert "<redacted>" in out
    if not text.startswith("Location"):
        assert visible in out  # the host (or the webhook's id) still says what failed


@given(token=telegram_tokens, limit=st.integers(min_value=1, max_value=120))
def test_safe_text_cuts_after_taking_the_telegram_token_out(token: str, limit: int) -> None:
    secret = token.split(":")[1]
    out = safe_text(f"POST https://api.telegram.org/bot{token}/sendMessage timed out", limit)
    assert not any(secret[i : i + 8] in out for i in range(len(secret) - 7))


@pytest.mark.parametrize(
    "text",
    [
        "bot-1: started",
        "bot 3 of 5 stopped",
        "robot1:abcdefghijkl",
        "the bot12 restarted",
        "https://slack.com/help and https://discord.com/channels/1/2",
        "https://api.telegram.org/",
    ],
)
def test_ordinary_bot_text_and_plain_chat_urls_are_kept(text: str) -> None:
    assert redact(text) == text
