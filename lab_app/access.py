"""The lab's access gate: an access token, checked before any page renders.

Why: the app launches sweeps (it starts worker processes), edits findings and queries the lab, and
Streamlit has no login of its own. So the app listens on 127.0.0.1 (.streamlit/config.toml, and
``make lab`` passes ``--server.address``), and serving it anywhere else is a deliberate act that
needs a token: ``make lab ADDRESS=0.0.0.0 SAE_LAB_TOKEN=...`` (the launcher, ``lab_app.serve``,
refuses a non-loopback address without one). Each browser session presents the token once, as
``?token=...`` in the address or typed into the prompt; it is then kept in ``st.session_state``
and compared again on every run with ``hmac.compare_digest``, whose time does not depend on how
many leading characters match. On loopback with no token set there is no check; once
``SAE_LAB_TOKEN`` is set it is always checked.

Every page script calls ``require()`` too, not only app.py, as a second line of defence: the page
scripts live in ``lab_app/views/`` rather than ``pages/`` because, until some session has reached
``st.navigation``, Streamlit (1.67) serves a ``pages/`` folder next to the entry point the
pre-``st.navigation`` way (an address such as ``/sql`` would run that file directly, without app.py,
its sidebar or its navigation).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re

import streamlit as st

from core.errors import LabError

TOKEN_ENV = "SAE_LAB_TOKEN"
MIN_TOKEN_CHARS = 16
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")  # what survives a URL's query string unescaped
_SESSION_KEY = "_lab_access_token"
_INPUT_KEY = "_lab_access_input"
MAKE_TOKEN = "SAE_LAB_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"


def is_loopback(address: str | None) -> bool:
    """Whether a ``server.address`` keeps the app on this machine. Unset means every interface."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def configured_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


def check_token(token: str) -> None:
    """A token someone cannot guess, and that survives being pasted into a URL."""
    if len(token) < MIN_TOKEN_CHARS:
        raise LabError(f"{TOKEN_ENV} has {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. {MAKE_TOKEN}")
    if not _TOKEN_CHARS.fullmatch(token):
        raise LabError(f"{TOKEN_ENV} may hold only letters, digits and - _ . ~ (it goes into a URL); e.g. {MAKE_TOKEN}")


def check_exposure(address: str, token: str | None) -> None:
    """The launcher's rule: a non-loopback address needs a good token."""
    if token is not None:
        check_token(token)
    elif not is_loopback(address):
        raise LabError(f"serving the lab on {address or 'every interface'} needs an access token: "
                       f"make lab ADDRESS={address or '0.0.0.0'} {MAKE_TOKEN}")


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response times do not reveal how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require() -> None:
    """Stop this script run (``st.stop``) unless the session may see the lab. Call before drawing anything."""
    expected = configured_token()
    address = st.get_option("server.address")
    if expected is None:
        if is_loopback(address):
            return
        st.markdown(f"**This lab needs its access token**, and none is set: it is served on "
                    f"{address or 'every interface'}. Restart it with `make lab ADDRESS={address or '0.0.0.0'} "
                    "SAE_LAB_TOKEN=...`.")
        st.stop()

    wrong = False
    if "token" in st.query_params:  # presented once; kept out of the address bar from here on
        given = st.query_params["token"]
        del st.query_params["token"]
        if token_matches(given, expected):
            st.session_state[_SESSION_KEY] = given
        else:
            wrong = True
    typed = st.session_state.get(_INPUT_KEY)
    if typed and token_matches(typed.strip(), expected):
        st.session_state[_SESSION_KEY] = typed.strip()
    elif typed:
        wrong = True
    if token_matches(st.session_state.get(_SESSION_KEY), expected):
        return

    st.markdown("**This lab needs its access token.** Open the address printed when it started (`…/?token=…`) or paste the "
                "token here.")
    st.text_input("Access token", type="password", key=_INPUT_KEY)
    if wrong:
        st.caption("That token is not this lab's.")
    st.stop()
