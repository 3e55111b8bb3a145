"""imap side of twistedmail."""
