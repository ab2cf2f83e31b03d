"""The simulator's error type, apart so that every module (server, contacts, relay) can raise it."""


class SimulatorError(Exception):
    """A control call that cannot be carried out (unknown phone, QR not issued, ...)."""
