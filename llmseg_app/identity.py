"""Who is using the app: on a Space the Hugging Face login (a typed name could impersonate anyone),
locally the name typed in. The Submit tab and the per-sample download both ask this one question.
"""

from __future__ import annotations

import gradio as gr

SIGN_IN = "sign in with Hugging Face first: your account identifies your submissions"


def current_user(user: str, profile: gr.OAuthProfile | None, *, require_login: bool) -> str | None:
    """The login's user name when signed in; the typed ``user`` where no login is required; else None."""
    if profile is not None:
        return profile.username
    return None if require_login else user
