#!/usr/bin/env python3
"""A link emulator in user space: delay and loss on one host's link, for kernels without
`sch_netem` (`tc qdisc ... netem` answers "Specified qdisc kind is unknown" there).

It joins two network interfaces of the root namespace, as a wire with a box in the middle:
the host side (the outer end of a host's veth, taken off the bridge) and the network side
(a veth whose peer is on the bridge). Every Ethernet frame that arrives on one is sent out of
the other. Frames the host sends (its egress, as `tc netem` on the host's eth0 would see
them) are dropped with probability LOSS and the rest sent DELAY later, in order; frames to
the host pass at once. Frames keep their offload header (PACKET_VNET_HDR), so segmentation
and checksum offload pass through unchanged, as they do through a veth.

    linkem.py HOST_IF NET_IF DELAY_MS LOSS STATS_FILE

Runs until SIGTERM or SIGINT; then writes "forwarded N dropped M delayed_ms D" to
STATS_FILE (also every second while it runs). Needs root. Standard library only.
"""

import collections
import os
import random
import select
import signal
import socket
import sys
import time

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
# A frame with its offload header: segmentation offload makes frames of up to 64 KiB, and
# more with big TCP.
MAX_FRAME = 256 * 1024


def open_if(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((name, 0))
    s.setblocking(False)
    return s


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    host_if, net_if = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[3]) / 1000.0
    loss = float(sys.argv[4])
    stats_file = sys.argv[5]
    host, net = open_if(host_if), open_if(net_if)
    # Frames from the host waiting out their delay: (due, frame), due in arrival order.
    pending = collections.deque()
    forwarded = dropped = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))
    last_stats = 0.0

    def write_stats():
        tmp = stats_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"forwarded {forwarded} dropped {dropped} delayed_ms {delay * 1000:.0f}\n")
        os.replace(tmp, stats_file)

    def send(sock, frame):
        try:
            sock.send(frame)
        except BlockingIOError:
            # A full device queue drops the frame, as a full qdisc would.
            pass
        except OSError:
            # The other end is down (a link cut): the frame is lost, as on a wire.
            pass

    write_stats()
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            send(net, pending.popleft()[1])
            forwarded += 1
        timeout = max(0.0, pending[0][0] - now) if pending else 1.0
        try:
            ready, _, _ = select.select([host, net], [], [], timeout)
        except InterruptedError:
            continue
        for sock in ready:
            while True:
                try:
                    frame, addr = sock.recvfrom(MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                # Our own sends show up as outgoing frames on the socket that sent them.
                if addr[2] == PACKET_OUTGOING:
                    continue
                if sock is host:
                    if rng.random() < loss:
                        dropped += 1
                    elif delay > 0:
                        pending.append((time.monotonic() + delay, frame))
                    else:
                        send(net, frame)
                        forwarded += 1
                else:
                    send(host, frame)
                    forwarded += 1
        if time.monotonic() - last_stats >= 1.0:
            write_stats()
            last_stats = time.monotonic()
    write_stats()


if __name__ == "__main__":
    main()
