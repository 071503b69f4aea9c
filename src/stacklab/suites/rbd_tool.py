"""RBD helper the `storage` suite runs on lab nodes with Debian's python3-rbd (uploaded over SSH, run as a script).

Usage: rbd_tool.py CONF USER POOL IMAGE COMMAND ARGS
  create SIZE                    create the image (layering only, so krbd-less clients need no extra features)
  write OFFSET FILE              write FILE's bytes at OFFSET, flush, print the sha256
  read OFFSET LENGTH             print the sha256 of LENGTH bytes at OFFSET
  line OFFSET                    print the text line that starts at OFFSET (up to 4 KiB)
  writer CHUNKS SIZE PAUSE       write CHUNKS random chunks one after another; after each flushed write print
                                 `acked INDEX SHA256` (what the cluster acknowledged)
  hashes CHUNKS SIZE             print `INDEX SHA256` of each chunk
  remove                         remove the image
  parent                         print the image's parent as POOL/IMAGE@SNAP (a clone), or nothing
Kept free of stacklab imports: it runs on the node, where only the standard library and python3-rbd exist.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time


def main(argv: list[str]) -> int:
    import rados  # type: ignore[import-not-found,unused-ignore]  # python3-rados, on the node only
    import rbd  # type: ignore[import-not-found,unused-ignore]

    conf, user, pool, image, command, *args = argv
    cluster = rados.Rados(conffile=conf, rados_id=user)
    cluster.connect(timeout=30)
    try:
        ioctx = cluster.open_ioctx(pool)
        try:
            if command == "create":
                rbd.RBD().create(ioctx, image, int(args[0]), old_format=False, features=rbd.RBD_FEATURE_LAYERING)
            elif command == "remove":
                rbd.RBD().remove(ioctx, image)
            else:
                with rbd.Image(ioctx, image) as img:
                    run_image_command(img, command, args)
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()
    return 0


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # the suite reads acknowledgements as they happen


def run_image_command(img: object, command: str, args: list[str]) -> None:
    if command == "write":
        with open(args[1], "rb") as handle:
            data = handle.read()
        img.write(data, int(args[0]))  # type: ignore[attr-defined]
        img.flush()  # type: ignore[attr-defined]
        emit(hashlib.sha256(data).hexdigest())
    elif command == "read":
        emit(hashlib.sha256(img.read(int(args[0]), int(args[1]))).hexdigest())  # type: ignore[attr-defined]
    elif command == "line":
        data = img.read(int(args[0]), 4096)  # type: ignore[attr-defined]
        emit(data.split(b"\n", 1)[0].split(b"\0", 1)[0].decode(errors="replace"))
    elif command == "writer":
        chunks, size, pause = int(args[0]), int(args[1]), float(args[2])
        for index in range(chunks):
            data = os.urandom(size)
            img.write(data, index * size)  # type: ignore[attr-defined]
            img.flush()  # type: ignore[attr-defined]
            emit(f"acked {index} {hashlib.sha256(data).hexdigest()}")
            time.sleep(pause)
    elif command == "parent":
        try:
            pool, name, snap = img.parent_info()  # type: ignore[attr-defined]
        except Exception:  # rbd.ImageNotFound: not a clone (the rbd module is only importable on the node)
            emit("")
        else:
            emit(f"{pool}/{name}@{snap}")
    elif command == "hashes":
        chunks, size = int(args[0]), int(args[1])
        for index in range(chunks):
            emit(f"{index} {hashlib.sha256(img.read(index * size, size)).hexdigest()}")  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
