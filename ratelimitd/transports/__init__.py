"""Transports: decode requests for the engine and encode its decisions."""
