"""waservice: a self-hosted, multi-session WhatsApp REST API."""

__version__ = "0.1.0"
