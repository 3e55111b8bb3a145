"""http side of twistedmail."""
