"""The coordinator's side: Flower ServerApp, Flask API, request queue, chain and audit tools."""
