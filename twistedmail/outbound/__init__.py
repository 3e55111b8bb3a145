"""outbound side of twistedmail."""
