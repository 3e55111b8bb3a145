"""smtp side of twistedmail."""
