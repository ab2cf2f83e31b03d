"""Linking with a pairing code instead of a QR (whatsmeow ``pair-code.go``), the phone's side.

1. The client (``PairPhone``) sends ``link_code_companion_reg stage="companion_hello"`` with its
   ephemeral key encrypted under the 8-character code it shows (salt32 ‖ iv16 ‖ AES-256-CTR, key
   PBKDF2-SHA256(code, salt, 131072)); the server answers with a ``link_code_pairing_ref``.
2. The person types the code on the phone (:meth:`CodePairing.enter_pair_code`): the phone decrypts
   the client's ephemeral key, sends its own ephemeral key wrapped the same way and its identity in a
   ``link_code_companion_reg`` notification.
3. The client answers ``stage="companion_finish"`` with a key bundle (its identity ‖ the phone's
   identity ‖ 32 random bytes) under AES-GCM keyed by HKDF of the ephemeral shared secret. Both sides
   derive ``adv_secret = HKDF(eph_shared ‖ DH(identity keys) ‖ random, "adv_secret")``, and the phone
   sends the same ``pair-success`` as after a QR scan.

A wrong code is only noticed at step 3 (CTR has no integrity): the bundle does not decrypt.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .accounts import Account
from .codec import SERVER_JID, Node
from .errors import SimulatorError
from .keys import KeyPair
from .noise import hkdf

if TYPE_CHECKING:
    from collections.abc import Callable

    from .server import Connection

PBKDF2_ROUNDS = 2 << 16  # 131072, as whatsmeow
CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
BUNDLE_INFO = b"link_code_pairing_key_bundle_encryption_key"


@dataclass
class PendingCode:
    """A client that asked to link ``phone`` with a code and waits for it to be typed."""

    connection_id: int
    phone: str
    ref: str
    wrapped_companion_ephemeral: bytes
    platform_display: str
    requested_at: float
    # Set once the code was entered: the ephemeral shared secret the key bundle is keyed with.
    ephemeral_shared: bytes | None = None


def _code_key(code: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", code.encode(), salt, PBKDF2_ROUNDS, 32)


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()


def normalize_code(code: str) -> str:
    """``"abcd-efgh"`` → ``"ABCDEFGH"``; ``SimulatorError`` unless 8 characters of the alphabet."""
    plain = code.replace("-", "").strip().upper()
    if len(plain) != 8 or any(c not in CODE_ALPHABET for c in plain):
        raise SimulatorError(f"not a pairing code: {code!r}")
    return plain


def _phone_side(code: str, wrapped_companion: bytes) -> tuple[bytes, bytes]:
    """(ephemeral shared secret, the phone's wrapped ephemeral key): the slow PBKDF2 part."""
    salt, iv, encrypted = wrapped_companion[:32], wrapped_companion[32:48], wrapped_companion[48:80]
    companion_ephemeral = _ctr(_code_key(code, salt), iv, encrypted)
    ours = KeyPair.generate()
    our_salt, our_iv = os.urandom(32), os.urandom(16)
    wrapped = our_salt + our_iv + _ctr(_code_key(code, our_salt), our_iv, ours.pub)
    return ours.dh(companion_ephemeral), wrapped


class CodePairing:
    """Pairing-code linking for :class:`~.server.Simulator` (which provides what is declared)."""

    connections: dict[int, Connection]
    history: list[tuple[float, str, dict[str, object]]]
    _pair_codes: dict[int, PendingCode]  # by connection id: one request per connection

    if TYPE_CHECKING:  # provided by Simulator; not defined here, so never shadowed

        def account(self, phone: str) -> Account: ...
        def _record(self, kind: str, details: dict[str, object]) -> None: ...
        def _send_pair_success(
            self, conn: Connection, account: Account, identity_pub: bytes, adv_secret: bytes, event: str
        ) -> None: ...
        async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> object: ...

    # -------------------------------------------------------------- the client's IQs

    def _link_code_reg(self, conn: Connection, node: Node) -> list[Node] | None:
        reg = node.child("link_code_companion_reg")
        assert reg is not None
        stage = reg.attr("stage")
        if stage == "companion_hello":
            return self._companion_hello(conn, reg)
        if stage == "companion_finish":
            self._companion_finish(conn, reg)
        return None

    def _companion_hello(self, conn: Connection, reg: Node) -> list[Node]:
        jid = reg.jid("jid")
        wrapped = reg.child("link_code_pairing_wrapped_companion_ephemeral_pub")
        display = reg.child("companion_platform_display")
        ref = secrets.token_urlsafe(24)
        self._pair_codes[conn.id] = PendingCode(
            conn.id,
            jid.user if jid is not None else "",
            ref,
            wrapped.data if wrapped is not None else b"",
            display.data.decode(errors="replace") if display is not None else "",
            time.time(),
        )
        self._record("pair_code_requested", {"conn": conn.id, "phone": jid.user if jid else None})
        return [Node("link_code_companion_reg", {}, [Node("link_code_pairing_ref", {}, ref.encode())])]

    def _companion_finish(self, conn: Connection, reg: Node) -> None:
        pending = self._pair_codes.get(conn.id)
        parts = {child.tag: child.data for child in reg.children}
        ref = parts.get("link_code_pairing_ref", b"").decode(errors="replace")
        if pending is None or pending.ephemeral_shared is None or ref != pending.ref:
            self._record("pair_code_failed", {"conn": conn.id, "reason": "unexpected companion_finish"})
            return
        bundle = parts.get("link_code_pairing_wrapped_key_bundle", b"")
        salt, nonce, sealed = bundle[:32], bundle[32:44], bundle[44:]
        key = hkdf(pending.ephemeral_shared, salt, BUNDLE_INFO, 32)
        try:
            plain = AESGCM(key).decrypt(nonce, sealed, None)
        except InvalidTag:
            self._record("pair_code_failed", {"conn": conn.id, "reason": "wrong code"})
            return
        companion_identity, primary_identity, adv_random = plain[:32], plain[32:64], plain[64:96]
        account = self.account(pending.phone)
        assert conn.registration is not None
        if companion_identity != conn.registration.identity or primary_identity != account.account_key.pub:
            self._record("pair_code_failed", {"conn": conn.id, "reason": "identity mismatch"})
            return
        identity_shared = account.account_key.dh(companion_identity)
        adv_secret = hkdf(pending.ephemeral_shared + identity_shared + adv_random, None, b"adv_secret", 32)
        del self._pair_codes[conn.id]
        self._send_pair_success(conn, account, companion_identity, adv_secret, "code_paired")

    # ============================================================== control API

    def pending_pair_codes(self) -> list[PendingCode]:
        """Clients that asked for a pairing code (``PairPhone``) and are still waiting for it."""
        return [
            p
            for p in self._pair_codes.values()
            if (conn := self.connections.get(p.connection_id)) is not None and conn.is_open
        ]

    async def wait_pair_code_request(self, phone: str | None = None, timeout: float = 15.0) -> PendingCode:
        """Until a client asked for a code (for ``phone``, if given); returns the latest such request."""

        def find() -> PendingCode | None:
            found = [p for p in self.pending_pair_codes() if phone is None or p.phone == phone.lstrip("+")]
            return found[-1] if found else None

        pending = await self.wait_for(find, timeout)
        assert isinstance(pending, PendingCode)
        return pending

    async def enter_pair_code(self, phone: str, code: str, timeout: float = 15.0) -> None:
        """Play the phone ``phone`` on which a person types ``code`` (as ``PairPhone`` returned it):
        the client that asked for a code for this phone gets the primary's keys, answers with its
        key bundle, and is sent ``pair-success`` (then it reconnects and logs in as ``phone``).

        Returns once ``pair-success`` is sent. Raises :class:`SimulatorError` if no client waits for
        a code for this phone, or if the code was wrong (the client's key bundle does not decrypt).
        """
        phone = phone.lstrip("+")
        plain = normalize_code(code)
        waiting = [p for p in self.pending_pair_codes() if p.phone == phone]
        if not waiting:
            raise SimulatorError(f"no client is waiting for a pairing code for {phone}")
        pending = waiting[-1]
        # PBKDF2 with 131072 rounds, twice: off the trio thread.
        shared, wrapped = await trio.to_thread.run_sync(
            _phone_side, plain, pending.wrapped_companion_ephemeral
        )
        conn = self.connections.get(pending.connection_id)
        if conn is None or not conn.is_open:
            raise SimulatorError("the client that asked for the code went away")
        pending.ephemeral_shared = shared
        mark = len(self.history)
        reg = Node(
            "link_code_companion_reg",
            {"stage": "primary_hello"},
            [
                Node("link_code_pairing_ref", {}, pending.ref.encode()),
                Node("link_code_pairing_wrapped_primary_ephemeral_pub", {}, wrapped),
                Node("primary_identity_pub", {}, self.account(phone).account_key.pub),
            ],
        )
        attrs = {"from": SERVER_JID, "type": "link_code_companion_reg", "id": secrets.token_hex(8)}
        conn.send(Node("notification", {**attrs, "t": str(int(time.time()))}, [reg]))
        self._record("pair_code_entered", {"conn": conn.id, "phone": phone})

        def outcome() -> tuple[str, dict[str, object]] | None:
            for _, kind, details in self.history[mark:]:
                if details.get("conn") == conn.id and kind in ("code_paired", "pair_code_failed"):
                    return kind, details
            return None

        result = await self.wait_for(outcome, timeout)
        assert isinstance(result, tuple)
        if result[0] == "pair_code_failed":
            raise SimulatorError(f"pairing with the code failed: {result[1].get('reason')}")
