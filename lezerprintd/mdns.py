"""Announces the appliance on the local network over mDNS/DNS-SD (zeroconf): `_http._tcp` for
browsers and `_lezerprint._tcp` (with its version, API path, id and name) for apps.

Rule: start-up never waits on the network. Everything runs in a background task: a network
that is not up yet, or a failure to open the multicast sockets, is logged and tried again, and
the announcement follows the machine's addresses (a Wi-Fi that connects late, a new DHCP lease)
by announcing afresh. On stop the services are withdrawn (goodbye packets) before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final

from lezerprintd import __version__
from lezerprintd.config import MdnsConfig
from lezerprintd.durable import write_atomically

if TYPE_CHECKING:
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

log = logging.getLogger(__name__)

HTTP_TYPE: Final = "_http._tcp.local."
APPLIANCE_TYPE: Final = "_lezerprint._tcp.local."
ID_FILE: Final = "appliance-id"
CHECK_SECONDS: Final = 10.0  # how often the addresses are looked at again
RETRY_SECONDS: Final = 30.0
NAME_CHECK_MS: Final = 500  # how long another device gets to say a name is taken


class Announcer:
    """The appliance's services on the network, kept in step with its addresses."""

    def __init__(self, config: MdnsConfig, data_dir: Path, port: int) -> None:
        self.config = config
        self._data_dir = data_dir
        self._port = port
        self._task: asyncio.Task[None] | None = None
        self._zeroconf: AsyncZeroconf | None = None
        self._services: list[ServiceInfo] = []
        self.announced: list[str] = []  # the addresses announced now (for status and tests)

    async def start(self) -> None:
        if not self.config.enabled:
            log.info("mDNS is off ([mdns] enabled = false)")
            return
        self._task = asyncio.create_task(self._run(), name="mdns")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._withdraw()

    async def _run(self) -> None:
        appliance_id = await asyncio.to_thread(_appliance_id, self._data_dir)
        while True:
            addresses = await asyncio.to_thread(self._addresses)
            if addresses != self.announced:
                await self._withdraw()
                if addresses:
                    try:
                        await self._announce(addresses, appliance_id)
                    except Exception as error:  # mDNS is never worth stopping the daemon for
                        log.warning(
                            "cannot announce on the network yet (%s); trying again in %d s",
                            error,
                            RETRY_SECONDS,
                            exc_info=not isinstance(error, OSError),
                        )
                        await self._withdraw()
                        await asyncio.sleep(RETRY_SECONDS)
                        continue
            await asyncio.sleep(CHECK_SECONDS)

    async def _announce(self, addresses: list[str], appliance_id: str) -> None:
        from zeroconf import InterfaceChoice, ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        host = socket.gethostname().split(".")[0] or "lezerprint"
        chosen = InterfaceChoice.All if self.config.interfaces == "all" else addresses
        self._zeroconf = AsyncZeroconf(interfaces=chosen)
        name = await _free_name(self._zeroconf, self.config.name or f"LezerPrint on {host}")
        server = f"{host}.local."
        properties = {"version": __version__, "api": "/api", "uuid": appliance_id, "name": name}
        self._services = [
            ServiceInfo(
                kind,
                f"{name}.{kind}",
                parsed_addresses=addresses,
                port=self._port,
                server=server,
                properties=txt,
            )
            for kind, txt in ((HTTP_TYPE, {"path": "/"}), (APPLIANCE_TYPE, properties))
        ]
        for service in self._services:
            # A name another device already uses gets a number added, as DNS-SD asks.
            await await_registration(self._zeroconf, service)
        self.announced = addresses
        log.info("announced %s as %s.local on %s", name, host, ", ".join(addresses))

    async def _withdraw(self) -> None:
        zeroconf, self._zeroconf = self._zeroconf, None
        self.announced = []
        if zeroconf is None:
            return
        try:
            await zeroconf.async_unregister_all_services()
        except Exception:  # the network went away under it: nothing left to tell
            log.debug("withdrawing the mDNS services failed", exc_info=True)
        await zeroconf.async_close()

    def _addresses(self) -> list[str]:
        """The addresses to announce: the configured ones, or every interface's except
        loopback and IPv6 link-local (which needs its interface to mean anything)."""
        if self.config.interfaces != "all":
            return [address.strip() for address in self.config.interfaces.split(",")]
        import ifaddr

        found: list[str] = []
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
                address = ipaddress.ip_address(text)
                if address.is_loopback or (address.version == 6 and address.is_link_local):
                    continue
                found.append(str(address))
        return sorted(set(found))


async def _free_name(zeroconf: AsyncZeroconf, wanted: str) -> str:
    """`wanted`, else `wanted-2`, `-3`...: the first name no other device answers for, in
    either service type, so that both services keep one name. zeroconf's own check (kept as
    a backstop) looks only in its cache, which a fresh instance has not filled yet: the
    first service it registered took another device's name."""
    from zeroconf.asyncio import AsyncServiceInfo

    for number in range(1, 100):
        candidate = wanted if number == 1 else f"{wanted}-{number}"
        for kind in (HTTP_TYPE, APPLIANCE_TYPE):
            info = AsyncServiceInfo(kind, f"{candidate}.{kind}")
            if await info.async_request(zeroconf.zeroconf, NAME_CHECK_MS):
                break  # taken
        else:
            return candidate
    return wanted


async def await_registration(zeroconf: AsyncZeroconf, service: ServiceInfo) -> None:
    registering = await zeroconf.async_register_service(service, allow_name_change=True)
    await registering


def _appliance_id(data_dir: Path) -> str:
    """This appliance's id, made at its first start and kept in the data dir."""
    path = data_dir / ID_FILE
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except (OSError, ValueError):
        made = str(uuid.uuid4())
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = data_dir / f".{ID_FILE}.{uuid.uuid4().hex}.part"
        write_atomically(path, (made + "\n").encode(), mode=0o644, temporary=temporary)
        return made
