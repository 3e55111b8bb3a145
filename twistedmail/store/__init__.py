"""Mailbox stores: the backends behind `twistedmail.interfaces.IMailStore`."""
