"""Independent sector encryption for the vmie-luks tests (Python's
`cryptography`, i.e. OpenSSL): dm-crypt's aes-xts-plain64 and
aes-cbc-essiv:sha256 with IV = payload byte offset / 512 + iv_tweak.

usage: sectors.py enc|dec xts|cbc-essiv KEYFILE IMAGE OFFSET SECTOR_SIZE PLAIN [IV_TWEAK]
  enc: encrypt the file PLAIN into IMAGE at OFFSET
  dec: decrypt $LEN bytes at OFFSET of IMAGE into the file PLAIN
"""
import hashlib
import os
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def crypt(mode, key, sector, iv, enc):
    ivb = iv.to_bytes(8, "little") + bytes(8)
    if mode == "xts":
        c = Cipher(algorithms.AES(key), modes.XTS(ivb))
    elif mode == "cbc-essiv":
        e = Cipher(algorithms.AES(hashlib.sha256(key).digest()), modes.ECB()).encryptor()
        c = Cipher(algorithms.AES(key), modes.CBC(e.update(ivb) + e.finalize()))
    else:
        raise SystemExit("unknown mode " + mode)
    x = c.encryptor() if enc else c.decryptor()
    return x.update(sector) + x.finalize()


def main():
    op, mode, keyfile, image, offset, ss, plain = sys.argv[1:8]
    tweak = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    key = open(keyfile, "rb").read()
    offset, ss = int(offset), int(ss)
    if op == "enc":
        data = open(plain, "rb").read()
        assert len(data) % ss == 0
        out = bytearray()
        for i in range(0, len(data), ss):
            out += crypt(mode, key, data[i:i + ss], tweak + i // 512, True)
        with open(image, "r+b") as f:
            f.seek(offset)
            f.write(out)
    else:
        length = int(os.environ["LEN"])
        with open(image, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        out = bytearray()
        for i in range(0, len(data), ss):
            out += crypt(mode, key, data[i:i + ss], tweak + i // 512, False)
        open(plain, "wb").write(out)


main()
