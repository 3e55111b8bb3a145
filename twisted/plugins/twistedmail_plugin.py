"""
twistd and store-backend plugins for twistedmail.

Kept tiny on purpose: Twisted imports every dropin when it scans for plugins,
and an import error here is swallowed (``twistd`` would just say "Unknown
command"), so the real code is imported lazily from the package.
"""

from twisted.application.service import ServiceMaker

from twistedmail.store.makers import MaildirStoreMaker, MemoryStoreMaker

twistedmail = ServiceMaker(  # type: ignore[no-untyped-call]
    "twistedmail",
    "twistedmail.tap",
    "A complete mail server: SMTP in and out, IMAP4rev1 and HTTP over one mailbox store.",
    "twistedmail",
)

memory_store = MemoryStoreMaker()
maildir_store = MaildirStoreMaker()
