"""Launch flags for headless Chromium in browser tests (the `chromium` fixture is in conftest)."""

# Without the background-networking flags Chromium keeps dialling out, which a closed
# network refuses; none of it is needed to render a loopback page.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
