"""Tests for challenge parsing, credentials, tokens and the token dance."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcache.core._auth import (
    MAX_AUTH_ROUNDS,
    MAX_TOKEN_LIFETIME,
    MAX_TOKEN_RESPONSE_SIZE,
    MIN_TOKEN_LIFETIME,
    REFRESH_MARGIN,
    Done,
    Fail,
    FetchToken,
    NegotiationState,
    Scope,
    SendRequest,
    Token,
    TokenCache,
    TokenKey,
    TokenNegotiation,
    cached_authorization,
    merge_scopes,
    parse_token_response,
)
from regcache.core._challenge import (
    MAX_CHALLENGE_LENGTH,
    Challenge,
    Credentials,
    RegistryAuthState,
    basic_authorization,
    check_password_hash,
    hash_password,
    load_docker_config,
    normalize_auth_key,
    parse_basic_authorization,
    parse_www_authenticate,
    select_challenge,
    verify_password,
)
from regcache.core._errors import (
    AuthError,
    ConfigError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)

# ---------------------------------------------------------------------------
# Real-world challenges (REGISTRIES.md section 2), as they come off the wire.

HUB_PING = b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
HUB_NGINX = (
    b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    b'scope="repository:library/nginx:pull"'
)
QUAY = b'Bearer realm="https://quay.io/v2/auth",service="quay.io"'
GHCR = b'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull"'
ECR_PUBLIC = b'Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws"'
GCR_UNQUOTED = b'Bearer realm="https://gcr.io/v2/token",service=gcr.io'
PKG_DEV = b'Bearer realm="https://us-docker.pkg.dev/v2/token"'
NVCR_QUERY = b'Bearer realm="https://nvcr.io/proxy_auth?scope=repository:nvidia/cuda:pull",scope=""'
GITLAB = (
    b'Bearer realm="https://gitlab.com/jwt/auth",service="container_registry",'
    b'scope="repository:group/project:pull"'
)
SPEC_PUSH = (
    b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    b'scope="repository:samalba/my-app:pull,push"'
)


@pytest.mark.parametrize(
    ("header", "params"),
    [
        (HUB_PING, {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}),
        (
            HUB_NGINX,
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/nginx:pull",
            },
        ),
        (QUAY, {"realm": "https://quay.io/v2/auth", "service": "quay.io"}),
        (
            GHCR,
            {
                "realm": "https://ghcr.io/token",
                "service": "ghcr.io",
                "scope": "repository:org/app:pull",
            },
        ),
        (
            ECR_PUBLIC,
            {"realm": "https://public.ecr.aws/token/", "service": "public.ecr.aws", "scope": "aws"},
        ),
        (GCR_UNQUOTED, {"realm": "https://gcr.io/v2/token", "service": "gcr.io"}),
        (PKG_DEV, {"realm": "https://us-docker.pkg.dev/v2/token"}),
        (
            NVCR_QUERY,
            {"realm": "https://nvcr.io/proxy_auth?scope=repository:nvidia/cuda:pull", "scope": ""},
        ),
        (
            GITLAB,
            {
                "realm": "https://gitlab.com/jwt/auth",
                "service": "container_registry",
                "scope": "repository:group/project:pull",
            },
        ),
        (
            SPEC_PUSH,
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:samalba/my-app:pull,push",
            },
        ),
    ],
    ids=["hub", "hub-scope", "quay", "ghcr", "ecr", "gcr", "pkgdev", "nvcr", "gitlab", "spec"],
)
def test_real_world_challenges(header: bytes, params: dict[str, str]) -> None:
    (challenge,) = parse_www_authenticate([header])
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == params
    assert challenge.token68 is None
    assert challenge.realm == params["realm"]
    assert challenge.service == params.get("service")


def test_rfc_several_challenges_in_one_value() -> None:
    parsed = parse_www_authenticate(['Basic realm="x", Bearer realm="y",service="z"'])
    assert parsed == (
        Challenge("basic", {"realm": "x"}),
        Challenge("bearer", {"realm": "y", "service": "z"}),
    )


def test_rfc_9110_example_with_escapes() -> None:
    header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
    parsed = parse_www_authenticate(header)
    assert parsed == (
        Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("basic", {"realm": "simple"}),
    )


def test_several_field_values() -> None:
    parsed = parse_www_authenticate([b'Basic realm="a"', b'Bearer realm="b"'])
    assert [c.scheme for c in parsed] == ["basic", "bearer"]


def test_backslash_escapes_and_comma_in_quoted_scope() -> None:
    (challenge,) = parse_www_authenticate(
        [r'Bearer realm="a \"q\" \\ b",scope="repository:a:pull,push repository:b:pull"']
    )
    assert challenge.realm == 'a "q" \\ b'
    assert challenge.params["scope"] == "repository:a:pull,push repository:b:pull"


def test_case_whitespace_and_empty_elements() -> None:
    (challenge,) = parse_www_authenticate([' , BEARER Realm = "x" ,, SERVICE= y ,'])
    assert challenge == Challenge("bearer", {"realm": "x", "service": "y"})


def test_token68_and_bare_scheme() -> None:
    parsed = parse_www_authenticate(["Negotiate YIIB==, Basic, Bearer realm=r"])
    assert parsed == (
        Challenge("negotiate", token68="YIIB=="),
        Challenge("basic"),
        Challenge("bearer", {"realm": "r"}),
    )


def test_repeated_scope_parameters_are_joined() -> None:
    (challenge,) = parse_www_authenticate(['Bearer realm="r",scope="a:b:pull",scope="aws"'])
    assert challenge.params["scope"] == "a:b:pull aws"


@pytest.mark.parametrize("values", [[], [""], ["  "], [", ,"], b""])
def test_empty_input_gives_no_challenge(values: Sequence[str] | bytes) -> None:
    assert parse_www_authenticate(values) == ()


def test_a_single_string_is_one_value() -> None:
    assert parse_www_authenticate(QUAY.decode()) == parse_www_authenticate([QUAY])


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="unterminated',
        'Bearer realm="x" service="y"',  # no comma between parameters
        "Bearer @",
        "Bearer realm=x y",
        "realm=x",
        'Bearer realm="a",realm="b"',  # which realm?
        "Bearer\x00",
        'Bearer realm="a\x01"',
    ],
)
def test_malformed_alone_raises_upstream_error(header: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_www_authenticate(header)
    assert caught.value.code is ErrorCode.UPSTREAM_ERROR
    assert caught.value.status == 502


def test_empty_parameter_value_reads_as_token68() -> None:
    # Grammatically a token68, so it parses; the realm is then missing.
    assert parse_www_authenticate("Bearer realm=") == (Challenge("bearer", token68="realm="),)
    assert select_challenge(parse_www_authenticate("Bearer realm=")) is None


def test_broken_challenges_are_skipped_when_others_parse() -> None:
    parsed = parse_www_authenticate(['Basic realm="x", Bearer realm="y', QUAY])
    assert [c.scheme for c in parsed] == ["basic", "bearer"]
    assert parsed[1].realm == "https://quay.io/v2/auth"
    # The challenge with the error is dropped whole, even its good parameters.
    parsed = parse_www_authenticate(['Bearer realm="y",service="s",scope="broken', "Basic"])
    assert parsed == (Challenge("basic"),)


def test_length_limit() -> None:
    header = 'Bearer realm="r",scope="' + "a" * MAX_CHALLENGE_LENGTH + '"'
    with pytest.raises(RemoteProtocolError):
        parse_www_authenticate([header])
    parse_www_authenticate(["a" * (MAX_CHALLENGE_LENGTH // 2)] * 2)


def test_challenge_values_are_validated() -> None:
    with pytest.raises(LocalProtocolError):
        Challenge("not a token")
    with pytest.raises(LocalProtocolError):
        Challenge("basic", {"realm": "x"}, token68="abc")
    with pytest.raises(LocalProtocolError):
        Challenge("basic", {"Realm": "x", "realm": "y"})
    with pytest.raises(LocalProtocolError):
        Challenge("basic", token68="a b")
    with pytest.raises(LocalProtocolError):
        Challenge("basic", {"realm": "line\nbreak"})


def test_render() -> None:
    challenge = Challenge("bearer", {"realm": 'a"b\\c', "service": "s"})
    assert challenge.render() == 'Bearer realm="a\\"b\\\\c",service="s"'
    assert str(Challenge("basic")) == "Basic"
    assert str(Challenge("negotiate", token68="abc=")) == "Negotiate abc="
    assert hash(challenge) == hash(Challenge("BEARER", {"SERVICE": "s", "realm": 'a"b\\c'}))


def test_select_challenge_prefers_bearer_with_realm() -> None:
    basic = Challenge("basic", {"realm": "x"})
    bearer = Challenge("bearer", {"realm": "y"})
    assert select_challenge([basic, bearer]) == bearer
    assert select_challenge([Challenge("bearer"), basic]) == basic
    assert select_challenge([Challenge("negotiate", token68="x")]) is None


_tokens = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    min_size=1,
    max_size=12,
)
_values = st.text(
    alphabet=st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="\x7f")
    | st.just("\t"),
    max_size=30,
)
_challenges = st.one_of(
    st.builds(
        Challenge,
        _tokens,
        st.dictionaries(_tokens.map(str.lower), _values, max_size=4),
    ),
    st.builds(
        lambda scheme, t68: Challenge(scheme, token68=t68),
        _tokens,
        st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True),
    ),
)


@given(st.lists(_challenges, min_size=1, max_size=3))
def test_rendered_challenges_reparse_equal(challenges: list[Challenge]) -> None:
    header = ", ".join(c.render() for c in challenges)
    assert parse_www_authenticate([header]) == tuple(challenges)
    # And one field value per challenge.
    assert parse_www_authenticate([c.render() for c in challenges]) == tuple(challenges)


@given(st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=200)), max_size=3))
def test_random_headers_raise_only_regcache_errors(values: list[str | bytes]) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_www_authenticate(values)


@given(st.text(alphabet='BearBasic realm="x,y\\ =\t', max_size=60))
def test_random_challenge_like_text(text: str) -> None:
    try:
        challenges = parse_www_authenticate([text])
    except RemoteProtocolError:
        return
    for challenge in challenges:
        assert parse_www_authenticate([challenge.render()]) == (challenge,)


# ---------------------------------------------------------------------------
# Credentials and Basic

JSON_KEY = json.dumps(
    {
        "type": "service_account",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE: pass word\n-----END-----\n",
        "client_email": "x@y.iam.gserviceaccount.com",
    },
    indent=2,
)


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("me", "s3cret-pass")
    assert "s3cret-pass" not in repr(credentials)
    assert "s3cret-pass" not in str(credentials)
    assert "me" in repr(credentials)
    assert "s3cret-pass" not in credentials.identity


def test_basic_authorization_rfc_7617_examples() -> None:
    assert basic_authorization(Credentials("Aladdin", "open sesame")) == (
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    )
    assert basic_authorization(Credentials("test", "123\u00a3")) == "Basic dGVzdDoxMjPCow=="


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials("_json_key", JSON_KEY),
        Credentials("$oauthtoken", "nvapi-abc:def"),
        Credentials("oauth2accesstoken", "ya29.a0A"),
        Credentials("user", ""),
    ],
)
def test_basic_round_trip_for_registry_quirks(credentials: Credentials) -> None:
    header = basic_authorization(credentials)
    assert header.startswith("Basic ")
    assert "\n" not in header
    assert parse_basic_authorization(header) == credentials
    assert parse_basic_authorization(header.encode()) == credentials


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "", "Basic"],
)
def test_parse_basic_authorization_refuses(header: str) -> None:
    assert parse_basic_authorization(header) is None


def test_parse_basic_authorization_is_case_insensitive() -> None:
    assert parse_basic_authorization("basic  QWxhZGRpbjpvcGVuIHNlc2FtZQ==") == Credentials(
        "Aladdin", "open sesame"
    )
    assert parse_basic_authorization("Basic " + base64.b64encode(b"\xff:x").decode()) is None


def test_username_cannot_hold_a_colon() -> None:
    with pytest.raises(LocalProtocolError):
        Credentials("a:b", "c")


def test_identity_tells_credentials_apart() -> None:
    assert Credentials("a", "b").identity == Credentials("a", "b").identity
    assert Credentials("a", "b").identity != Credentials("a", "c").identity
    assert Credentials("ab", "").identity != Credentials("a", "b").identity


@given(st.text(max_size=100))
def test_parse_basic_authorization_never_raises(text: str) -> None:
    result = parse_basic_authorization(text)
    assert result is None or isinstance(result, Credentials)


@given(
    st.text(max_size=30).filter(lambda u: ":" not in u),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
)
def test_basic_round_trip(username: str, password: str) -> None:
    credentials = Credentials(username, password)
    assert parse_basic_authorization(basic_authorization(credentials)) == credentials


# ---------------------------------------------------------------------------
# Password hashes

SALT = b"0123456789abcdef"


def test_password_hash_round_trip() -> None:
    encoded = hash_password("hunter2 \u00e9", salt=SALT, iterations=1000)
    assert encoded.startswith("pbkdf2-sha256$1000$")
    assert "hunter2" not in encoded
    assert verify_password("hunter2 \u00e9", encoded)
    assert not verify_password("hunter3 \u00e9", encoded)
    assert not verify_password("", encoded)
    check_password_hash(encoded)


def test_password_hash_is_deterministic_for_a_salt() -> None:
    one = hash_password("pw", salt=SALT, iterations=10)
    assert one == hash_password("pw", salt=SALT, iterations=10)
    assert one != hash_password("pw", salt=SALT[::-1], iterations=10)
    _, _, salt, digest = one.split("$")
    assert base64.b64decode(salt) == SALT
    assert len(base64.b64decode(digest)) == 32


def test_hash_password_refuses_weak_parameters() -> None:
    with pytest.raises(LocalProtocolError):
        hash_password("pw", salt=b"short")
    with pytest.raises(LocalProtocolError):
        hash_password("pw", salt=SALT, iterations=0)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "pbkdf2-sha1$10$c2FsdA==$aGFzaA==",
        "pbkdf2-sha256$ten$c2FsdA==$aGFzaA==",
        "pbkdf2-sha256$0$c2FsdA==$aGFzaA==",
        "pbkdf2-sha256$999999999999$c2FsdA==$aGFzaA==",
        "pbkdf2-sha256$10$!!$aGFzaA==",
        "pbkdf2-sha256$10$c2FsdA==$aGFzaA==",  # hash of the wrong length
        "pbkdf2-sha256$\u0661\u0660$c2FsdA==$aGFzaA==",  # non-ASCII digits
    ],
)
def test_malformed_password_hash(encoded: str) -> None:
    with pytest.raises(ConfigError):
        verify_password("pw", encoded)
    with pytest.raises(ConfigError) as caught:
        check_password_hash(encoded, key_path='mirror.users."bob"')
    assert caught.value.key_path == 'mirror.users."bob"'


# ---------------------------------------------------------------------------
# Scopes


def test_scope_parse() -> None:
    assert Scope.parse("repository:library/nginx:pull,push") == Scope(
        "repository", "library/nginx", ("pull", "push")
    )
    # The name may carry a host:port colon: actions start after the last one.
    scope = Scope.parse("repository:localhost:5000/app:pull")
    assert scope == Scope("repository", "localhost:5000/app", ("pull",))
    assert Scope.parse("repository:foo:") == Scope("repository", "foo", ())
    assert str(Scope.parse("repository:foo:")) == "repository:foo:"
    assert Scope.parse("aws:repository:gatun/agent:pull").name == "repository:gatun/agent"


@pytest.mark.parametrize("text", ["aws", "a:b", "repository::pull", ":x:y", "x::"])
def test_scopes_without_the_shape_are_verbatim(text: str) -> None:
    scope = Scope.parse(text)
    assert scope.verbatim
    assert str(scope) == text


@pytest.mark.parametrize("text", ["", "a b", "repository:a:pull\n", "\t"])
def test_scope_parse_refuses(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        Scope.parse(text)


def test_scope_construction_is_validated() -> None:
    assert str(Scope.pull("library/nginx")) == "repository:library/nginx:pull"
    with pytest.raises(LocalProtocolError):
        Scope("repository:a:pull")  # would not survive str() -> parse()
    with pytest.raises(LocalProtocolError):
        Scope("aws", "", ("pull",))
    with pytest.raises(LocalProtocolError):
        Scope("repository", "a", ("pull,push",))
    with pytest.raises(LocalProtocolError):
        Scope("repo:sitory", "a", ("pull",))


def test_merge_scopes() -> None:
    merged = merge_scopes(
        [Scope.pull("a"), Scope.parse("aws")],
        [Scope.parse("repository:a:pull,push"), Scope.pull("b"), Scope.parse("aws")],
    )
    assert [str(s) for s in merged] == ["repository:a:pull,push", "aws", "repository:b:pull"]


_scope_text = st.text(
    alphabet=st.characters(codec="utf-8", min_codepoint=0x21, exclude_characters="\x7f"),
    min_size=1,
    max_size=20,
)


@given(
    st.from_regex(r"[a-z0-9()]+", fullmatch=True),
    _scope_text,
    st.lists(_scope_text.filter(lambda a: ":" not in a and "," not in a), max_size=3),
)
def test_scope_round_trip(resource_type: str, name: str, actions: list[str]) -> None:
    scope = Scope(resource_type, name, tuple(actions))
    assert Scope.parse(str(scope)) == scope


@given(st.text(max_size=40))
def test_scope_parse_random_text(text: str) -> None:
    try:
        scope = Scope.parse(text)
    except LocalProtocolError:
        return
    assert Scope.parse(str(scope)) == scope


# ---------------------------------------------------------------------------
# Token responses

NOW = 1_000_000.0


def test_token_only() -> None:
    token = parse_token_response(b'{"token":"djE6b3JnL2FwcDox"}', NOW)
    assert token.value == "djE6b3JnL2FwcDox"
    assert token.expires_at == NOW + 60
    assert token.issued_at is None
    assert token.authorization == "Bearer djE6b3JnL2FwcDox"


def test_access_token_only() -> None:
    token = parse_token_response(b'{"access_token":"abc","expires_in":300}', NOW)
    assert token.value == "abc"
    assert token.expires_at == NOW + 300


def test_both_fields_prefer_token() -> None:
    body = b'{"token":"one","access_token":"two","expires_in":300}'
    assert parse_token_response(body, NOW).value == "one"
    body = b'{"token":"","access_token":"two"}'
    assert parse_token_response(body, NOW).value == "two"
    body = b'{"token":null,"access_token":"two"}'
    assert parse_token_response(body, NOW).value == "two"


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (10, MIN_TOKEN_LIFETIME),
        (0, MIN_TOKEN_LIFETIME),
        (-5, MIN_TOKEN_LIFETIME),
        (60, 60),
        (300.5, 300.5),
        (900, 900),
        (10**400, MAX_TOKEN_LIFETIME),
        (1e300, MAX_TOKEN_LIFETIME),
    ],
)
def test_expires_in_is_clamped(expires_in: float, lifetime: float) -> None:
    body = json.dumps({"token": "t", "expires_in": expires_in}).encode()
    assert parse_token_response(body, NOW).expires_at == NOW + lifetime


def test_issued_at_is_kept_but_expiry_counts_from_now() -> None:
    body = b'{"token":"t","expires_in":3600,"issued_at":"2009-11-10T23:00:00Z"}'
    token = parse_token_response(body, NOW)
    assert token.issued_at == 1257894000.0
    assert token.expires_at == NOW + 3600
    body = b'{"token":"t","issued_at":"2023-01-02T03:04:05.123456789+01:00"}'
    assert parse_token_response(body, NOW).issued_at == pytest.approx(1672625045.123456)


@pytest.mark.parametrize(
    "issued_at", ['"yesterday"', "5", '"2023-13-45T00:00:00Z"', '"2023-01-02"']
)
def test_unreadable_issued_at_is_dropped(issued_at: str) -> None:
    body = f'{{"token":"t","issued_at":{issued_at}}}'.encode()
    assert parse_token_response(body, NOW).issued_at is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"token"',
        b"{}",
        b'{"token":42}',
        b'{"access_token":["x"]}',
        b'{"token":"t","expires_in":"300"}',
        b'{"token":"t","expires_in":true}',
        b'{"token":"t","expires_in":NaN}',
        b'{"token":"t","expires_in":Infinity}',
        b'{"token":"SECRET\\nInjected: 1"}',
        b'{"token":"SECRET with spaces"}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_malformed_token_responses(body: bytes) -> None:
    with pytest.raises(AuthError) as caught:
        parse_token_response(body, NOW)
    assert caught.value.code is ErrorCode.UPSTREAM_ERROR
    assert "SECRET" not in str(caught.value)


def test_token_size_limits() -> None:
    with pytest.raises(AuthError):
        parse_token_response(b" " * (MAX_TOKEN_RESPONSE_SIZE + 1), NOW)
    with pytest.raises(AuthError):
        parse_token_response(json.dumps({"token": "x" * 40_000}).encode(), NOW)


def test_token_repr_hides_the_value() -> None:
    token = Token("SECRETTOKEN", 5.0)
    assert "SECRETTOKEN" not in repr(token)
    assert "SECRETTOKEN" not in str(token)


@given(st.binary(max_size=200))
def test_random_token_bodies_raise_only_auth_errors(body: bytes) -> None:
    with contextlib.suppress(AuthError):
        parse_token_response(body, NOW)


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_json = _json_scalars | st.lists(_json_scalars, max_size=2)


@given(
    st.dictionaries(
        st.sampled_from(["token", "access_token", "expires_in", "issued_at", "other"]), _json
    )
)
def test_random_token_documents(document: dict[str, object]) -> None:
    try:
        token = parse_token_response(json.dumps(document).encode(), NOW)
    except AuthError:
        return
    assert NOW + MIN_TOKEN_LIFETIME <= token.expires_at <= NOW + MAX_TOKEN_LIFETIME


# ---------------------------------------------------------------------------
# FetchToken and the cache

ME = Credentials("me", "PASSWORD-XYZ")


def test_fetch_token_url_docker_hub() -> None:
    fetch = FetchToken(
        "https://auth.docker.io/token", "registry.docker.io", (Scope.pull("library/nginx"),)
    )
    assert fetch.url() == (
        "https://auth.docker.io/token?service=registry.docker.io"
        "&scope=repository%3Alibrary%2Fnginx%3Apull"
    )
    assert fetch.headers() == ()


def test_fetch_token_with_credentials() -> None:
    fetch = FetchToken("https://ghcr.io/token", "ghcr.io", (Scope.pull("org/app"),), ME)
    assert fetch.url().endswith("&account=me")
    assert fetch.headers() == (("Authorization", basic_authorization(ME)),)
    assert "PASSWORD-XYZ" not in repr(fetch)
    assert "PASSWORD-XYZ" not in fetch.url()


def test_fetch_token_realm_with_query() -> None:
    fetch = FetchToken(
        "https://nvcr.io/proxy_auth?scope=repository:nvidia/cuda:pull",
        None,
        (Scope.pull("nvidia/cuda"), Scope.pull("nvidia/other")),
    )
    assert fetch.url() == (
        "https://nvcr.io/proxy_auth?scope=repository:nvidia/cuda:pull"
        "&scope=repository%3Anvidia%2Fother%3Apull"
    )


def test_fetch_token_without_service_and_with_verbatim_scope() -> None:
    fetch = FetchToken("https://public.ecr.aws/token/", None, (Scope.parse("aws"),))
    assert fetch.url() == "https://public.ecr.aws/token/?scope=aws"


@pytest.mark.parametrize(
    "realm", ["", "/token", "ftp://x/token", "https://", "https://a b/", "http://x:port/"]
)
def test_fetch_token_refuses_bad_realms(realm: str) -> None:
    with pytest.raises(LocalProtocolError):
        FetchToken(realm, None, ())


def key(
    realm: str = "https://r/token", *scopes: str, credentials: Credentials | None = None
) -> TokenKey:
    return TokenKey.of(realm, "svc", [Scope.parse(s) for s in scopes], credentials)


def test_token_key() -> None:
    assert key("https://r", "repository:a:pull", "aws") == key(
        "https://r", "aws", "repository:a:pull"
    )
    assert key(credentials=ME) != key(credentials=Credentials("me", "other"))
    assert key(credentials=ME) != key()
    assert "PASSWORD-XYZ" not in repr(key(credentials=ME))


def test_cache_refresh_margin() -> None:
    cache = TokenCache()
    cache.put(key(), Token("t", expires_at=100.0))
    assert cache.get(key(), 100.0 - REFRESH_MARGIN - 1) == Token("t", 100.0)
    assert cache.get(key(), 100.0 - REFRESH_MARGIN) is None
    assert len(cache) == 0  # expired entries are dropped when seen
    assert cache.get(key("https://other"), 0.0) is None


def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    cache = TokenCache(max_entries=3)
    for name in "abc":
        cache.put(key(f"https://{name}"), Token(name, 1e9))
    assert cache.get(key("https://a"), 0.0) is not None  # a is now recently used
    cache.put(key("https://d"), Token("d", 1e9))
    assert len(cache) == 3
    assert cache.get(key("https://b"), 0.0) is None
    assert {cache.get(key(f"https://{n}"), 0.0) is not None for n in "acd"} == {True}
    for n in range(100):
        cache.put(key(f"https://flood{n}"), Token("x", 1e9))
    assert len(cache) == 3
    with pytest.raises(LocalProtocolError):
        TokenCache(max_entries=0)


def test_cache_discard_only_the_refused_token() -> None:
    cache = TokenCache()
    cache.put(key(), Token("new", 1e9))
    cache.discard(key(), Token("old", 1e9))
    assert cache.get(key(), 0.0) == Token("new", 1e9)
    cache.discard(key())
    assert cache.get(key(), 0.0) is None


# ---------------------------------------------------------------------------
# The token dance

HUB_SCOPES = (Scope.pull("library/nginx"),)
HUB_KEY_ANON = TokenKey.of("https://auth.docker.io/token", "registry.docker.io", HUB_SCOPES, None)


def negotiation(
    state: RegistryAuthState | None = None,
    cache: TokenCache | None = None,
    credentials: Credentials | None = None,
    scopes: tuple[Scope, ...] = HUB_SCOPES,
    **kwargs: int,
) -> TokenNegotiation:
    return TokenNegotiation(
        state if state is not None else RegistryAuthState("docker.io"),
        cache if cache is not None else TokenCache(),
        credentials,
        scopes,
        **kwargs,
    )


def state_of(flow: TokenNegotiation) -> NegotiationState:
    # A call, so that the type checker does not pin the state between inputs.
    return flow.state


def token_body(value: str, expires_in: int = 300) -> bytes:
    return json.dumps({"token": value, "expires_in": expires_in}).encode()


def test_anonymous_bearer_flow() -> None:
    state = RegistryAuthState("docker.io")
    state.observe(401, [HUB_PING])
    cache = TokenCache()
    flow = negotiation(state, cache)
    assert flow.start(NOW) == SendRequest(None)
    fetch = flow.on_response(401, [HUB_NGINX], NOW)
    assert isinstance(fetch, FetchToken)
    assert state_of(flow) is NegotiationState.AWAIT_TOKEN
    assert fetch.url() == (
        "https://auth.docker.io/token?service=registry.docker.io"
        "&scope=repository%3Alibrary%2Fnginx%3Apull"
    )
    assert fetch.headers() == ()
    assert flow.on_token_response(200, token_body("hub-token"), NOW) == SendRequest(
        "Bearer hub-token"
    )
    assert flow.on_response(200, [], NOW) == Done()
    assert state_of(flow) is NegotiationState.DONE
    assert flow.attempts == 2
    assert cache.get(HUB_KEY_ANON, NOW + 200) == Token("hub-token", NOW + 300)


def test_cached_token_is_reused_without_fetching() -> None:
    state = RegistryAuthState(
        "docker.io",
        Challenge(
            "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}
        ),
    )
    cache = TokenCache()
    cache.put(HUB_KEY_ANON, Token("cached", NOW + 300))
    flow = negotiation(state, cache)
    assert flow.start(NOW) == SendRequest("Bearer cached")
    assert flow.on_response(200, [], NOW) == Done()
    assert cached_authorization(state, cache, None, HUB_SCOPES, NOW) == "Bearer cached"
    assert cached_authorization(state, cache, ME, HUB_SCOPES, NOW) is None
    assert cached_authorization(state, cache, None, HUB_SCOPES, NOW + 295) is None


def test_refused_cached_token_is_dropped_and_refetched() -> None:
    state = RegistryAuthState("docker.io")
    state.observe(401, [HUB_PING])
    cache = TokenCache()
    cache.put(HUB_KEY_ANON, Token("revoked", NOW + 300))
    flow = negotiation(state, cache)
    assert flow.start(NOW) == SendRequest("Bearer revoked")
    fetch = flow.on_response(401, [HUB_NGINX], NOW)
    assert isinstance(fetch, FetchToken)
    assert cache.get(HUB_KEY_ANON, NOW) is None
    assert flow.on_token_response(200, token_body("fresh"), NOW) == SendRequest("Bearer fresh")
    assert flow.on_response(200, [], NOW) == Done()


def test_with_credentials_flow() -> None:
    flow = negotiation(credentials=ME)
    assert flow.start(NOW) == SendRequest(None)
    fetch = flow.on_response(401, [GHCR], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.credentials == ME
    assert fetch.headers() == (("Authorization", basic_authorization(ME)),)
    # Requested scopes first, then the challenge's.
    assert [str(s) for s in fetch.scopes] == [
        "repository:library/nginx:pull",
        "repository:org/app:pull",
    ]
    assert flow.on_token_response(200, token_body("t"), NOW) == SendRequest("Bearer t")
    fail = flow.on_response(401, [GHCR], NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is ErrorCode.DENIED
    assert fail.error.status == 403
    assert state_of(flow) is NegotiationState.FAILED


def test_ghcr_needs_a_token_even_anonymously() -> None:
    flow = negotiation(scopes=(Scope.pull("org/app"),))
    flow.start(NOW)
    fetch = flow.on_response(401, [GHCR], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.url() == (
        "https://ghcr.io/token?service=ghcr.io&scope=repository%3Aorg%2Fapp%3Apull"
    )
    assert fetch.headers() == ()


def test_ecr_public_keeps_the_aws_scope() -> None:
    state = RegistryAuthState("public.ecr.aws")
    state.observe(401, [ECR_PUBLIC])
    cache = TokenCache()
    flow = negotiation(state, cache, scopes=(Scope.pull("docker/library/nginx"),))
    flow.start(NOW)
    fetch = flow.on_response(401, [ECR_PUBLIC], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.url().endswith("&scope=repository%3Adocker%2Flibrary%2Fnginx%3Apull&scope=aws")
    flow.on_token_response(200, token_body("ecr"), NOW)
    # The remembered challenge's verbatim scope is part of the lookup key.
    again = negotiation(state, cache, scopes=(Scope.pull("docker/library/nginx"),))
    assert again.start(NOW) == SendRequest("Bearer ecr")


def test_gitlab_service_literal_and_pkg_dev_without_service() -> None:
    flow = negotiation(scopes=(Scope.pull("group/project"),))
    flow.start(NOW)
    fetch = flow.on_response(401, [GITLAB], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.service == "container_registry"
    assert "service=container_registry" in fetch.url()
    flow = negotiation(scopes=(Scope.pull("p/r/i"),))
    flow.start(NOW)
    fetch = flow.on_response(401, [PKG_DEV], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.service is None
    assert "service" not in fetch.url()


def test_401_without_header_reuses_the_ping_challenge() -> None:
    state = RegistryAuthState("gcr.io")
    state.observe(401, [GCR_UNQUOTED])
    flow = negotiation(state, scopes=(Scope.pull("project/image"),))
    assert flow.start(NOW) == SendRequest(None)
    fetch = flow.on_response(401, [], NOW)
    assert fetch == FetchToken("https://gcr.io/v2/token", "gcr.io", (Scope.pull("project/image"),))


def test_401_with_unreadable_header_reuses_the_ping_challenge() -> None:
    state = RegistryAuthState("gcr.io")
    state.observe(401, [GCR_UNQUOTED])
    state.observe(401, ['Bearer realm="broken'])  # ignored
    flow = negotiation(state)
    flow.start(NOW)
    fetch = flow.on_response(401, ['Bearer realm="broken'], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.realm == "https://gcr.io/v2/token"


def test_remembered_repository_scopes_are_not_reused() -> None:
    state = RegistryAuthState("ghcr.io")
    flow = negotiation(state, scopes=(Scope.pull("org/app"),))
    flow.start(NOW)
    flow.on_response(401, [GHCR], NOW)
    assert state.challenge == parse_www_authenticate(GHCR)[0]
    other = negotiation(state, scopes=(Scope.pull("org/other"),))
    other.start(NOW)
    fetch = other.on_response(401, [], NOW)
    assert isinstance(fetch, FetchToken)
    assert fetch.scopes == (Scope.pull("org/other"),)


def test_401_without_any_challenge_fails() -> None:
    flow = negotiation()
    flow.start(NOW)
    fail = flow.on_response(401, [], NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is ErrorCode.UPSTREAM_ERROR
    flow = negotiation()
    flow.start(NOW)
    result = flow.on_response(401, ['Bearer realm="broken'], NOW)
    assert isinstance(result, Fail)
    assert "WWW-Authenticate" in result.error.message


def test_unsupported_scheme_and_bad_realm_fail() -> None:
    flow = negotiation()
    flow.start(NOW)
    result = flow.on_response(401, ["Negotiate abc=="], NOW)
    assert isinstance(result, Fail)
    assert "negotiate" in result.error.message
    flow = negotiation()
    flow.start(NOW)
    result = flow.on_response(401, ['Bearer realm="ftp://x/token"'], NOW)
    assert isinstance(result, Fail)
    assert result.error.code is ErrorCode.UPSTREAM_ERROR


def test_basic_registry_remembered_from_the_ping() -> None:
    state = RegistryAuthState("registry.local")
    state.observe(401, [b'Basic realm="Registry Realm"'])
    flow = negotiation(state, credentials=ME)
    assert flow.start(NOW) == SendRequest(basic_authorization(ME))
    assert flow.on_response(200, [], NOW) == Done()


def test_basic_registry_discovered_on_401() -> None:
    flow = negotiation(credentials=ME)
    assert flow.start(NOW) == SendRequest(None)
    assert flow.on_response(401, ['Basic realm="r"'], NOW) == SendRequest(basic_authorization(ME))
    fail = flow.on_response(401, ['Basic realm="r"'], NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is ErrorCode.DENIED
    assert "PASSWORD-XYZ" not in fail.error.message


def test_basic_without_credentials_relays_the_challenge() -> None:
    flow = negotiation()
    flow.start(NOW)
    fail = flow.on_response(401, ['Basic realm="r"'], NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is ErrorCode.UNAUTHORIZED
    assert fail.error.status == 401
    assert fail.error.headers == (("WWW-Authenticate", 'Basic realm="r"'),)


@pytest.mark.parametrize(
    ("status", "code", "http_status"),
    [
        (401, ErrorCode.UNAUTHORIZED, 401),
        (403, ErrorCode.DENIED, 403),
        (429, ErrorCode.TOOMANYREQUESTS, 429),
        (500, ErrorCode.UPSTREAM_ERROR, 502),
        (404, ErrorCode.UPSTREAM_ERROR, 502),
    ],
)
@pytest.mark.parametrize("credentials", [None, ME])
def test_token_endpoint_refusals(
    status: int, code: ErrorCode, http_status: int, credentials: Credentials | None
) -> None:
    flow = negotiation(credentials=credentials)
    flow.start(NOW)
    flow.on_response(401, [HUB_NGINX], NOW)
    fail = flow.on_token_response(status, b'{"errors":[]}', NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is code
    assert fail.error.status == http_status
    assert "https://auth.docker.io/token" in fail.error.message
    if status in (401, 403):
        used = "with the configured credentials" if credentials else "anonymously"
        assert used in fail.error.message
    assert "PASSWORD-XYZ" not in fail.error.message
    assert state_of(flow) is NegotiationState.FAILED


def test_malformed_token_body_fails() -> None:
    flow = negotiation()
    flow.start(NOW)
    flow.on_response(401, [HUB_NGINX], NOW)
    fail = flow.on_token_response(200, b"<html>", NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is ErrorCode.UPSTREAM_ERROR


def test_repeated_401_after_a_fresh_token_fails_with_the_challenge() -> None:
    flow = negotiation()
    flow.start(NOW)
    flow.on_response(401, [HUB_NGINX], NOW)
    flow.on_token_response(200, token_body("t"), NOW)
    fail = flow.on_response(401, [HUB_NGINX], NOW)
    assert isinstance(fail, Fail)
    assert fail.error.code is ErrorCode.UNAUTHORIZED
    assert fail.error.headers == (
        ("WWW-Authenticate", parse_www_authenticate(HUB_NGINX)[0].render()),
    )


def test_rounds_are_bounded() -> None:
    # The cache holds a token under the challenge's key but start() cannot
    # know it: anonymous try, cached token, fresh token, then give up.
    cache = TokenCache()
    cache.put(HUB_KEY_ANON, Token("stale", NOW + 300))
    flow = negotiation(cache=cache)
    assert flow.start(NOW) == SendRequest(None)
    assert flow.on_response(401, [HUB_NGINX], NOW) == SendRequest("Bearer stale")
    assert isinstance(flow.on_response(401, [HUB_NGINX], NOW), FetchToken)
    assert flow.on_token_response(200, token_body("t"), NOW) == SendRequest("Bearer t")
    assert flow.attempts == MAX_AUTH_ROUNDS == 3
    assert isinstance(flow.on_response(401, [HUB_NGINX], NOW), Fail)
    # A smaller bound stops earlier.
    cache.put(HUB_KEY_ANON, Token("stale", NOW + 300))
    flow = negotiation(cache=cache, max_rounds=2)
    flow.start(NOW)
    assert flow.on_response(401, [HUB_NGINX], NOW) == SendRequest("Bearer stale")
    result = flow.on_response(401, [HUB_NGINX], NOW)
    assert isinstance(result, Fail)
    assert "2 tries" in result.error.message
    assert flow.attempts == 2


@pytest.mark.parametrize("status", [200, 206, 307, 403, 404, 429, 500])
def test_anything_but_401_is_done(status: int) -> None:
    flow = negotiation()
    flow.start(NOW)
    assert flow.on_response(status, [HUB_NGINX], NOW) == Done()


def test_inputs_out_of_order_raise_local_protocol_error() -> None:
    flow = negotiation()
    assert state_of(flow) is NegotiationState.IDLE
    assert flow.attempts == 0
    with pytest.raises(LocalProtocolError):
        flow.on_response(200, [], NOW)
    with pytest.raises(LocalProtocolError):
        flow.on_token_response(200, b"{}", NOW)
    flow.start(NOW)
    with pytest.raises(LocalProtocolError):
        flow.start(NOW)
    with pytest.raises(LocalProtocolError):
        flow.on_token_response(200, token_body("t"), NOW)
    flow.on_response(401, [HUB_NGINX], NOW)
    with pytest.raises(LocalProtocolError):
        flow.on_response(200, [], NOW)
    flow.on_token_response(200, token_body("t"), NOW)
    flow.on_response(200, [], NOW)
    with pytest.raises(LocalProtocolError):
        flow.start(NOW)
    with pytest.raises(LocalProtocolError):
        flow.on_response(200, [], NOW)
    with pytest.raises(LocalProtocolError):
        flow.on_token_response(200, b"{}", NOW)
    assert state_of(flow) is NegotiationState.DONE


def test_password_never_shows_in_commands_or_errors() -> None:
    secret = "PASSWORD-XYZ"
    seen: list[object] = [ME]
    state = RegistryAuthState("ghcr.io")
    flow = negotiation(state, credentials=ME)
    seen.append(flow.start(NOW))
    seen.append(flow.on_response(401, [GHCR], NOW))
    seen.append(flow.on_token_response(200, token_body("TOKENVALUE"), NOW))
    fail = flow.on_response(401, [GHCR], NOW)
    assert isinstance(fail, Fail)
    seen += [fail, fail.error, fail.error.message, fail.error.to_body(), flow, state]
    basic = negotiation(credentials=ME)
    basic.start(NOW)
    seen.append(basic.on_response(401, ['Basic realm="r"'], NOW))
    for thing in seen:
        assert secret not in repr(thing)
        assert secret not in str(thing)
        assert "TOKENVALUE" not in repr(thing)
    encoded = base64.b64encode(f"me:{secret}".encode()).decode()
    assert all(encoded not in repr(thing) for thing in seen)


# ---------------------------------------------------------------------------
# Docker config.json


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_docker_config() -> None:
    data = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _auth("hubuser", "p:a:ss")},
                "ghcr.io": {"username": "gh", "password": "ghp_x"},
                "https://gcr.io": {"auth": _auth("_json_key", JSON_KEY)},
                "localhost:5000/v2/": {"auth": _auth("local", "pw"), "email": "x@y"},
                "nvcr.io": {"auth": _auth("$oauthtoken", "nvapi")},
                "quay.io": {},
                "myregistry.azurecr.io": {"identitytoken": "refresh"},
                "registry-1.docker.io": {"auth": _auth("second", "ignored")},
            },
            "credsStore": "desktop",
            "credHelpers": {"gcr.io": "gcloud", "bad": 42},
        }
    ).encode()
    config = load_docker_config(data)
    assert dict(config) == {
        "docker.io": Credentials("hubuser", "p:a:ss"),
        "ghcr.io": Credentials("gh", "ghp_x"),
        "gcr.io": Credentials("_json_key", JSON_KEY),
        "localhost:5000": Credentials("local", "pw"),
        "nvcr.io": Credentials("$oauthtoken", "nvapi"),
    }


def test_docker_config_auth_wins_over_username() -> None:
    data = json.dumps(
        {"auths": {"x.io": {"auth": _auth("a", "b"), "username": "c", "password": "d"}}}
    ).encode()
    assert load_docker_config(data)["x.io"] == Credentials("a", "b")


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("https://GHCR.io/", "ghcr.io"),
        ("http://localhost:5000/v2/x", "localhost:5000"),
        ("quay.io", "quay.io"),
    ],
)
def test_normalize_auth_key(key: str, host: str) -> None:
    assert normalize_auth_key(key) == host


@pytest.mark.parametrize(
    ("document", "key_path"),
    [
        (b"not json", ""),
        (b"[]", ""),
        (b'{"auths": []}', "auths"),
        (b'{"auths": {"ghcr.io": "x"}}', 'auths."ghcr.io"'),
        (b'{"auths": {"ghcr.io": {"auth": "!!!"}}}', 'auths."ghcr.io".auth'),
        (b'{"auths": {"ghcr.io": {"auth": 5}}}', 'auths."ghcr.io".auth'),
        (b'{"auths": {"ghcr.io": {"auth": "bm9jb2xvbg=="}}}', 'auths."ghcr.io".auth'),
        (b'{"auths": {"ghcr.io": {"password": "p"}}}', 'auths."ghcr.io".username'),
        (b'{"auths": {"ghcr.io": {"username": 1}}}', 'auths."ghcr.io".username'),
        (b'{"auths": {"ghcr.io": {"username": "a:b"}}}', 'auths."ghcr.io".username'),
        (b'{"auths": {"": {"username": "a"}}}', 'auths.""'),
    ],
)
def test_docker_config_errors_name_the_key(document: bytes, key_path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_docker_config(document)
    assert caught.value.key_path == key_path


def test_docker_config_without_auths() -> None:
    assert dict(load_docker_config(b'{"credsStore": "osxkeychain"}')) == {}


@given(st.binary(max_size=200))
def test_random_docker_config_bytes(data: bytes) -> None:
    with contextlib.suppress(ConfigError):
        load_docker_config(data)


@given(
    st.dictionaries(
        st.sampled_from(["auths", "credsStore", "x"]),
        _json | st.dictionaries(st.text(max_size=5), _json | st.dictionaries(st.text(), _json)),
    )
)
def test_random_docker_config_documents(document: dict[str, object]) -> None:
    try:
        config = load_docker_config(json.dumps(document).encode())
    except ConfigError:
        return
    assert all(isinstance(c, Credentials) for c in config.values())


@given(
    st.dictionaries(
        st.text(max_size=10),
        st.dictionaries(
            st.sampled_from(["auth", "username", "password", "email"]),
            _json | st.sampled_from(["", _auth("u", "p:w"), "Og==", "dTo=", "bm9jb2xvbg=="]),
        ),
        max_size=3,
    )
)
def test_random_auths_entries(auths: dict[str, object]) -> None:
    with contextlib.suppress(ConfigError):
        load_docker_config(json.dumps({"auths": auths}).encode())
