"""Gateway model runner: verifies, loads and scores weight-only model payloads (numpy only)."""
