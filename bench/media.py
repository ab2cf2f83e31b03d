"""Media throughput: 1 MiB images through POST /send-media, across 10 sessions, in MB/s.

The WhatsApp simulator (tests/wasim) runs in its own process with its HTTPS media host; the service
starts with the simulator's test CA (`SSL_CERT_FILE`, `SSL_CERT_DIR`: Go reads them at start). Each
session is paired, then sends to its own simulated contact from ``--loops`` sender loops, each
image a multipart upload (the `file` part, `type=image`, a caption) of a distinct random-noise PNG
of about 1 MiB (incompressible, like a photo). After a warm-up, a fixed window is measured: MB/s
(10^6 bytes of image per second acknowledged by WhatsApp), images/s and the latency of a send.
Every 2xx must show up at the simulator as an image whose SHA-256 and caption are the ones sent.

    python bench/media.py [--sessions 10] [--duration 20] [--warmup 5] [--loops 1] [--size 1048576]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    KEEPALIVE_EXPIRY,
    BenchError,
    ServiceSystem,
    SimulatorProcess,
    add_common_arguments,
    cpu_percent,
    log,
    pair_all,
    percentile,
    phone_for,
    run_benchmark,
    sample,
    simulator,
)


def noise_png(size: int, seed: int) -> bytes:
    """A PNG of random pixels, about `size` bytes (noise does not compress)."""
    from PIL import Image  # pillow: installed with the test dependencies

    side = int((size / 3) ** 0.5)
    pixels = random.Random(seed).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


async def verify(sim: SimulatorProcess, accepted: list[tuple[str, bytes, str]]) -> list[str]:
    """Accepted images the simulator did not receive intact: why, for each."""
    received = {m["id"]: m for m in await sim.get("/messages", kind="image")}
    problems = []
    for message_id, digest, caption in accepted:
        media = ((received.get(message_id) or {}).get("content") or {}).get("media") or {}
        if not media:
            problems.append(f"{message_id}: not received as an image")
        elif media.get("file_sha256") != base64.b64encode(digest).decode():
            problems.append(f"{message_id}: SHA-256 differs")
        elif media.get("caption") != caption:
            problems.append(f"{message_id}: caption {media.get('caption')!r}, sent {caption!r}")
    return problems


async def measure(
    service: ServiceSystem, sim: SimulatorProcess, ids: list[str], contacts: dict[str, str], args: Any
) -> dict[str, Any]:
    images = {
        sid: [noise_png(args.size, i * 100 + n) for n in range(args.loops)] for i, sid in enumerate(ids)
    }
    latencies: list[float] = []
    accepted: list[tuple[str, bytes, str]] = []
    errors: dict[str, int] = {}
    measured_bytes = 0
    measured_images = 0
    start = trio.current_time()
    measure_from, end = start + args.warmup, start + args.warmup + args.duration
    limits = httpx.Limits(max_connections=len(ids) * args.loops, keepalive_expiry=KEEPALIVE_EXPIRY)
    async with httpx.AsyncClient(base_url=service.url, timeout=120, limits=limits) as http:

        async def loop(sid: str, number: int) -> None:
            nonlocal measured_bytes, measured_images
            image, n = images[sid][number], 0
            digest = hashlib.sha256(image).digest()
            while (t0 := trio.current_time()) < end:
                caption = f"media {sid} {number} {n}"
                n += 1
                form = {"session_id": sid, "number": contacts[sid], "type": "image", "caption": caption}
                try:
                    response = await http.post(
                        "/send-media", data=form, files={"file": ("noise.png", image, "image/png")}
                    )
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    await trio.sleep(0.1)
                    continue
                t1 = trio.current_time()
                if response.status_code // 100 != 2:
                    key = f"{response.status_code} {response.text[:80]}"
                    errors[key] = errors.get(key, 0) + 1
                    await trio.sleep(0.1)
                    continue
                accepted.append((response.json()["result"]["id"], digest, caption))
                if t0 >= measure_from and t1 <= end:
                    latencies.append(t1 - t0)
                    measured_bytes += len(image)
                    measured_images += 1

        cpu: dict[str, float] = {}

        async def window() -> None:
            await trio.sleep_until(measure_from)
            before = (sample(service.pid), sample(sim.pid))
            await trio.sleep_until(end)
            after = (sample(service.pid), sample(sim.pid))
            cpu.update(cpu_sut=cpu_percent(before[0], after[0]), cpu_sim=cpu_percent(before[1], after[1]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(window)
            for sid in ids:
                for number in range(args.loops):
                    nursery.start_soon(loop, sid, number)
    problems = await verify(sim, accepted)
    return {
        "mb_per_s": measured_bytes / args.duration / 1e6,
        "images_per_s": measured_images / args.duration,
        "image_bytes": sum(len(i[0]) for i in images.values()) // len(images),
        "p50": 1000 * percentile(latencies, 50),
        "p99": 1000 * percentile(latencies, 99),
        "accepted": len(accepted),
        "problems": problems,
        "errors": errors,
        **cpu,
    }


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-"))
    ids = [f"m{i:03d}" for i in range(args.sessions)]
    phones = [phone_for("1555", i) for i in range(args.sessions)]
    contacts = {sid: f"1202555{i:04d}" for i, sid in enumerate(ids)}
    data_dir = workdir / "service" / "data"
    data_dir.parent.mkdir(parents=True)
    try:
        async with simulator(args.sim_port, workdir) as sim, trio.open_nursery() as nursery:
            if not sim.tls_env:
                raise BenchError("the simulator has no media host (it reported no tls_env)")
            service = ServiceSystem(data_dir, args.patched_dir, env=sim.tls_env)  # trusts its CA
            try:
                await service.start(nursery)
                seconds = await pair_all(service, sim, ids, phones, args.concurrency, args.timeout)
                log(f"{len(ids)} sessions connected in {seconds:.1f} s")
                service.pause_polling()
                result = await measure(service, sim, ids, contacts, args)
                service.check_alive()
            except BaseException:
                log(f"service log tail:\n{service.log_tail()}\nsimulator log tail:\n{sim.log_tail()}")
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await service.stop()
                nursery.cancel_scope.cancel()
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nPOST /send-media, {result['image_bytes']:,} byte PNG images, {args.sessions} sessions x "
        f"{args.loops} loop(s), {args.duration:g} s window"
    )
    print(
        f"{result['mb_per_s']:.2f} MB/s ({result['images_per_s']:.1f} images/s), p50 {result['p50']:.0f} ms, "
        f"p99 {result['p99']:.0f} ms, {result['accepted']} accepted, "
        f"CPU service {result.get('cpu_sut', 0):.0f} % simulator {result.get('cpu_sim', 0):.0f} %"
    )
    if result["problems"] or result["errors"]:
        print(
            f"{len(result['problems'])} not received intact (first: {result['problems'][:3]}); "
            f"errors {result['errors']}"
        )
    else:
        print("every accepted image reached the simulator with its SHA-256 and caption; no errors")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before the window")
    parser.add_argument("--loops", type=int, default=1, help="concurrent sender loops per session")
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per image (about)")
    add_common_arguments(parser, timeout=300)
    run_benchmark(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
