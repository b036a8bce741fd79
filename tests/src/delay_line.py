"""A delay line: every IP packet the kernel routes into the tun device `name` comes back out
of it `ms` milliseconds later, in order. The namespace's routing sends what arrives from
either side into the device, and what the device returns on to where it was going, so the
link through the namespace has that one-way delay each way (`tc netem` is not available).

Usage: python3 delay_line.py <tun name> <ms>. Prints `ready` once the device exists.
Standard library only; Linux."""

import collections
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def main() -> None:
    name, delay = sys.argv[1], float(sys.argv[2]) / 1000.0
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    print("ready", flush=True)
    held = collections.deque()
    while True:
        wait = max(0.0, held[0][0] - time.monotonic()) if held else None
        if select.select([fd], [], [], wait)[0]:
            # At most a burst at a time, so that due packets are not kept behind new ones.
            for _ in range(256):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                held.append((time.monotonic() + delay, packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            try:
                os.write(fd, held.popleft()[1])
            except OSError:
                pass  # a packet the kernel will not take back (as a full queue drops it)


if __name__ == "__main__":
    main()
