"""The reviewer web page: per batch the calls by verdict and severity, per call the redacted transcript
by role with findings highlighted, an audio player on a short-lived signed URL, and review buttons.

- ``settings`` -- ``WebSettings`` (``settings.web``): address, TLS mode, audio URL lifetime.
- ``signing``  -- HMAC-signed audio URLs scoped to one call and one person; HTTP Range parsing.
- ``views``    -- the JSON the page's script renders (report + human review, redacted).
- ``app``      -- the Starlette application (``create_app``); ``cli`` -- ``callqc web``.
"""
