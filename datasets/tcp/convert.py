#!/usr/bin/env python3
"""Turn a loopback pcap into the shipped ``tcp_loopback.parquet``.

Usage (from the repository root, with ``pip install dpkt``)::

    python datasets/tcp/convert.py datasets/tcp/capture.pcap \
        streamkit/datasets/data/tcp_loopback.parquet

Every IPv4 TCP segment of the capture becomes one row with the raw columns ``ts``
(the pcap timestamp, microseconds), ``src``, ``dst`` (``"ip:port"``), ``flags``
(``"SYN|ACK"``-style), ``seq``, ``ack`` and ``length`` (TCP payload bytes, from
the IP total length, so captures with a short snap length work);
:func:`streamkit.datasets.tcp.tcp_events` then adds ``conn``, ``direction`` and
``event``. Anything that is not IPv4/TCP is counted and skipped. The file is written
with zstd compression and no pickled metadata.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import dpkt
import polars as pl

from streamkit.datasets.tcp import _FLAG_ORDER, tcp_events

_FLAG_BITS = {
    "SYN": dpkt.tcp.TH_SYN,
    "FIN": dpkt.tcp.TH_FIN,
    "RST": dpkt.tcp.TH_RST,
    "PSH": dpkt.tcp.TH_PUSH,
    "ACK": dpkt.tcp.TH_ACK,
    "URG": dpkt.tcp.TH_URG,
    "ECE": dpkt.tcp.TH_ECE,
    "CWR": dpkt.tcp.TH_CWR,
}


def _flags(bits: int) -> str:
    return "|".join(name for name in _FLAG_ORDER if bits & _FLAG_BITS[name])


def read_pcap(path: Path) -> tuple[pl.DataFrame, int]:
    """Read the IPv4 TCP segments of a pcap; return the raw frame and the skipped count."""
    rows: dict[str, list[object]] = {k: [] for k in ("ts", "src", "dst", "flags", "seq", "ack")}
    rows["length"] = []
    skipped = 0
    with path.open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        if reader.datalink() != dpkt.pcap.DLT_EN10MB:
            sys.exit(f"convert.py: {path} has link type {reader.datalink()}, expected Ethernet")
        for ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                skipped += 1
                continue
            tcp = ip.data
            # Payload from the IP header, not len(tcp.data): the snap length cuts payloads.
            length = ip.len - ip.hl * 4 - tcp.off * 4
            # pcap stores whole microseconds; dpkt hands them over as float seconds.
            rows["ts"].append(round(ts * 1_000_000))
            rows["src"].append(f"{socket.inet_ntoa(ip.src)}:{tcp.sport}")
            rows["dst"].append(f"{socket.inet_ntoa(ip.dst)}:{tcp.dport}")
            rows["flags"].append(_flags(tcp.flags))
            rows["seq"].append(tcp.seq)
            rows["ack"].append(tcp.ack)
            rows["length"].append(length)
    frame = pl.DataFrame(
        rows,
        schema={
            "ts": pl.Int64,
            "src": pl.String,
            "dst": pl.String,
            "flags": pl.String,
            "seq": pl.UInt32,
            "ack": pl.UInt32,
            "length": pl.Int64,
        },
    )
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us"))), skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("pcap", type=Path, nargs="?", default=here / "capture.pcap")
    parser.add_argument(
        "out",
        type=Path,
        nargs="?",
        default=here.parents[1] / "streamkit" / "datasets" / "data" / "tcp_loopback.parquet",
    )
    args = parser.parse_args(argv)
    raw, skipped = read_pcap(args.pcap)
    table = tcp_events(raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(args.out, compression="zstd", compression_level=19, statistics=True)
    print(
        f"wrote {args.out}: {table.height} segments, {table['conn'].n_unique()} connections, "
        f"{args.out.stat().st_size} bytes ({skipped} non-TCP frames skipped)"
    )


if __name__ == "__main__":
    main()
