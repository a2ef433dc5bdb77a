#!/usr/bin/env python3
"""Print a RabbitMQ ``password_hash`` for definitions.json (rabbit_password_hashing_sha256).

The hash is base64(salt + sha256(salt + utf8 password)) with a random 4-byte salt, the
format ``rabbitmqctl hash_password`` produces.

    python3 deploy/rabbitmq/hash_password.py 'new password'
    python3 deploy/rabbitmq/hash_password.py --check 'password' 'hash'   # exit 0 if it matches
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_password(password: str, password_hash: str) -> bool:
    raw = base64.b64decode(password_hash)
    return len(raw) == 36 and hash_password(password, raw[:4]) == password_hash


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        sys.exit(0 if check_password(sys.argv[2], sys.argv[3]) else 1)
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(hash_password(sys.argv[1]))
