#!/usr/bin/python3
"""Delay and loss for a lab site router, in user space.

Why it exists: the lab shapes WAN rate with htb, but delay and loss would
come from netem, and kernels built without CONFIG_NET_SCH_NETEM (this one,
without module support) have none: `tc qdisc add ... netem` answers
"Specified qdisc kind is unknown". Node cannot create a TUN device (it has
no ioctl), so this small helper does, and bench/lab/topology.ts runs one per
site router namespace when a WAN delay or loss is asked for.

How: it opens a TUN device in the namespace it runs in. The router policy-
routes every packet it forwards between the WAN and the LAN into the device
(`ip rule iif <wan|lan> lookup 100`, table 100 = default dev <tun>). The
helper holds each packet for --delay-ms, drops it with probability --loss
percent, and writes it back; the kernel receives it again with iif=<tun>
and routes it normally (`ip rule iif <tun> lookup main`). So the delay is
applied once per direction: host-to-hq RTT = 2 x delay, as `netem delay D`
on both ends of the WAN link would give. The constant delay keeps packets
in order (FIFO release).

Offload: without loss the device is opened with IFF_VNET_HDR and TSO, so the
kernel hands over whole GSO super-packets (up to 64 KiB) and the virtio
header goes back untouched: ~8% of a core at 100 Mbit/s (measured on the
2-core lab machine). With loss, offload is off so that a drop hits one MTU-
sized segment rather than a 64 KiB burst (~16% of a core). epoll timeouts
are whole milliseconds, which adds 0 to 1 ms per pass.

Output: one line `ready <device>` on stdout once the device exists (the lab
then brings it up and adds the routes); a summary on stderr at exit. SIGTERM
and SIGINT end it at once; the device disappears with the process.

Usage: delayline.py --dev NAME [--delay-ms MS] [--loss PERCENT]
                    [--offload | --no-offload] [--max-queue PACKETS] [--seed N]
"""
import argparse
import collections
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08
# Largest read: a GSO super-packet plus its virtio header.
READ_BYTES = 256 * 1024
# Packets drained per wake-up before due releases are written, so reads cannot starve them.
DRAIN_PER_PASS = 512


def parse_args():
    parser = argparse.ArgumentParser(description="user-space netem: delay and loss on a TUN device")
    parser.add_argument("--dev", required=True, help="TUN device name (at most 15 characters)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay added to every packet")
    parser.add_argument("--loss", type=float, default=0.0, help="percent of packets dropped, per direction")
    parser.add_argument("--offload", dest="offload", action="store_true", default=None)
    parser.add_argument("--no-offload", dest="offload", action="store_false")
    parser.add_argument("--max-queue", type=int, default=20000, help="packets held at most; more are dropped (tail drop)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the loss draws")
    args = parser.parse_args()
    if args.delay_ms < 0 or not 0 <= args.loss < 100:
        parser.error("delay must be >= 0 and loss in [0, 100)")
    if args.offload is None:
        args.offload = args.loss == 0
    return args


def open_tun(name, offload):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    if offload:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
    return fd


def stop(*_):
    # Raise rather than set a flag: epoll.poll(-1) is restarted after EINTR (PEP 475) and would never see it.
    raise SystemExit(0)


def main():
    args = parse_args()
    if args.seed is not None:
        random.seed(args.seed)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    fd = open_tun(args.dev, args.offload)
    delay_s = args.delay_ms / 1000.0
    loss = args.loss / 100.0
    queue = collections.deque()
    stats = {"in": 0, "out": 0, "lost": 0, "overflow": 0, "bytes": 0}
    poller = select.epoll()
    poller.register(fd, select.EPOLLIN)
    read, write, monotonic, draw = os.read, os.write, time.monotonic, random.random
    print(f"ready {args.dev}", flush=True)
    print(f"delayline {args.dev}: delay={args.delay_ms} ms loss={args.loss}% offload={args.offload} pid={os.getpid()}", file=sys.stderr, flush=True)
    try:
        while True:
            timeout = max(0.0, queue[0][0] - monotonic()) if queue else -1
            if poller.poll(timeout):
                now = monotonic()
                for _ in range(DRAIN_PER_PASS):
                    try:
                        packet = read(fd, READ_BYTES)
                    except BlockingIOError:
                        break
                    stats["in"] += 1
                    if loss and draw() < loss:
                        stats["lost"] += 1
                        continue
                    if len(queue) >= args.max_queue:
                        stats["overflow"] += 1
                        continue
                    queue.append((now + delay_s, packet))
            now = monotonic()
            # A constant delay makes arrival order the release order.
            while queue and queue[0][0] <= now:
                packet = queue.popleft()[1]
                try:
                    write(fd, packet)
                    stats["out"] += 1
                    stats["bytes"] += len(packet)
                except OSError:
                    stats["overflow"] += 1
    finally:
        print(f"delayline {args.dev} exit: {stats}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
