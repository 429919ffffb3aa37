"""SQLite storage for sweeps: every finished cell is committed on its own, so a killed sweep
resumes where it stopped.

One database file holds any number of sweeps. Each sweep is identified by its *key*, the first
16 hex digits of the SHA-256 of its configuration (grid, epochs, optimizer and its options,
builder name, kernel backend and a fingerprint of the data), so different grids or data in one
file never mix. Tables (schema version 1):

- ``minigd_meta(name, value)``: ``format = minigd-sweep``, ``version = 1``;
- ``sweeps(key, config, cells, created)``: the configuration (JSON) and the grid's cells
  (JSON list of [batch_size, lr, seed]) of each sweep;
- ``cells(key, position, batch_size, lr, seed, row, history, finished)``: one finished cell,
  its table row and its full History as strict JSON (NaN stored as null / "nan").

No pickle anywhere. A file that is not SQLite, or SQLite without this schema, gives a
``ValueError`` naming the file and is left untouched.
"""

import hashlib
import json
import math
import os
import pathlib
import sqlite3
import time

import numpy as np

from ..history import History

FORMAT, VERSION = "minigd-sweep", "1"
_SCHEMA = (
    "CREATE TABLE minigd_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE sweeps (key TEXT PRIMARY KEY, config TEXT NOT NULL, cells TEXT NOT NULL, "
    "created REAL NOT NULL)",
    "CREATE TABLE cells (key TEXT NOT NULL REFERENCES sweeps(key), position INTEGER NOT NULL, "
    "batch_size INTEGER NOT NULL, lr REAL NOT NULL, seed INTEGER NOT NULL, row TEXT NOT NULL, "
    "history TEXT NOT NULL, finished REAL NOT NULL, PRIMARY KEY (key, position))",
)
_TABLES = {"minigd_meta", "sweeps", "cells"}
_FLOAT_COLUMNS = ("lr", "train_loss", "val_loss", "val_accuracy", "train_accuracy", "seconds")


def sweep_key(config):
    """The 16-hex-digit key of a sweep configuration (a JSON-serialisable dict)."""
    text = json.dumps(config, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_fingerprint(*arrays, sample=256):
    """A short hash of arrays' shapes, dtypes and up to ``sample`` evenly spaced rows each.

    Cheap for any size and never copies a whole array (an np.memmap reads ``sample`` rows)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.shape}|{array.dtype.str}|".encode())
        n = array.shape[0]
        if n:
            rows = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
            digest.update(np.ascontiguousarray(array[rows]).tobytes())
    return digest.hexdigest()[:16]


class SweepStorage:
    """A sweep database opened for reading (``create=False``) or for a sweep to write to.

    Opening checks the file first: a file that is not SQLite, or SQLite with tables but not this
    schema and version, raises ``ValueError`` naming the file and nothing is written. A missing
    or empty file is created with the schema when ``create`` is true.
    """

    def __init__(self, path, create=True):
        self.path = os.fspath(path)
        exists = os.path.exists(self.path)
        if not exists and not create:
            raise FileNotFoundError(f"no sweep storage at {self.path!r}")
        try:
            if create:
                self._con = sqlite3.connect(self.path, timeout=60)
            else:
                uri = pathlib.Path(self.path).absolute().as_uri() + "?mode=ro"
                self._con = sqlite3.connect(uri, uri=True, timeout=60)
        except sqlite3.Error as error:
            raise ValueError(f"cannot open sweep storage {self.path!r}: {error}") from None
        try:
            self._check_or_create(create)
        except BaseException:
            self._con.close()
            raise

    def _fail(self, why):
        return ValueError(
            f"{self.path!r} is not a minigd sweep database ({why}); it was left "
            f"unchanged: pass another storage path"
        )

    def _check_or_create(self, create):
        try:
            tables = {
                r[0]
                for r in self._con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not tables:
                if not create:
                    raise self._fail("no sweep tables")
                with self._con:
                    for statement in _SCHEMA:
                        self._con.execute(statement)
                    self._con.executemany(
                        "INSERT INTO minigd_meta VALUES (?, ?)",
                        [("format", FORMAT), ("version", VERSION)],
                    )
                return
            if not _TABLES <= tables:
                raise self._fail(f"tables {sorted(tables)}, expected {sorted(_TABLES)}")
            meta = dict(self._con.execute("SELECT name, value FROM minigd_meta"))
        except sqlite3.DatabaseError as error:
            raise self._fail(f"not a readable SQLite file: {error}") from None
        if meta.get("format") != FORMAT:
            raise self._fail(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != VERSION:
            raise self._fail(
                f"schema version {meta.get('version')!r}; this minigd reads version {VERSION}"
            )

    def close(self):
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _query(self, sql, args=()):
        try:
            return self._con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as error:
            raise ValueError(f"sweep storage {self.path!r} is damaged: {error}") from None

    # ---- writing ---------------------------------------------------------------------------
    def begin(self, key, config, cells):
        """Record sweep ``key`` (its config and cells) unless it is already stored."""
        try:
            with self._con:
                self._con.execute(
                    "INSERT OR IGNORE INTO sweeps VALUES (?, ?, ?, ?)",
                    (
                        key,
                        json.dumps(config, allow_nan=False),
                        json.dumps([list(c) for c in cells]),
                        time.time(),
                    ),
                )
        except sqlite3.DatabaseError as error:
            raise ValueError(f"cannot write to sweep storage {self.path!r}: {error}") from None

    def save(self, key, position, row, history):
        """Commit one finished cell (its row and History) in its own transaction."""
        try:
            with self._con:
                self._con.execute(
                    "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        position,
                        row["batch_size"],
                        row["lr"],
                        row["seed"],
                        json.dumps({k: _json_value(v) for k, v in row.items()}, allow_nan=False),
                        json.dumps(history.to_dict(), allow_nan=False),
                        time.time(),
                    ),
                )
        except sqlite3.DatabaseError as error:
            raise ValueError(f"cannot write to sweep storage {self.path!r}: {error}") from None

    # ---- reading ---------------------------------------------------------------------------
    def keys(self):
        """Stored sweep keys, oldest first."""
        return [r[0] for r in self._query("SELECT key FROM sweeps ORDER BY created, key")]

    def summary(self):
        """One dict per stored sweep: key, cells (grid size), done (finished cells), created
        (Unix time), config."""
        out = []
        for key, config, cells, created in self._query(
            "SELECT key, config, cells, created FROM sweeps ORDER BY created, key"
        ):
            done = self._query("SELECT COUNT(*) FROM cells WHERE key = ?", (key,))[0][0]
            out.append(
                {
                    "key": key,
                    "cells": len(json.loads(cells)),
                    "done": done,
                    "created": created,
                    "config": json.loads(config),
                }
            )
        return out

    def sweep(self, key):
        """(config, cells) of sweep ``key``; ValueError if it is not stored."""
        found = self._query("SELECT config, cells FROM sweeps WHERE key = ?", (key,))
        if not found:
            raise ValueError(f"no sweep {key!r} in {self.path!r}; stored: {self.keys()}")
        config, cells = found[0]
        return json.loads(config), [tuple(c) for c in json.loads(cells)]

    def finished(self, key, cells):
        """{cell: (row, History)} of the finished cells of sweep ``key``."""
        out = {}
        for position, row, history in self._query(
            "SELECT position, row, history FROM cells WHERE key = ? ORDER BY position", (key,)
        ):
            try:
                row = json.loads(row)
                row = {
                    k: (math.nan if v is None and k in _FLOAT_COLUMNS else v)
                    for k, v in row.items()
                }
                cell = cells[position]
                if (row["batch_size"], row["lr"], row["seed"]) != tuple(cell):
                    raise ValueError(f"cell {position} holds {row} instead of {cell}")
                out[tuple(cell)] = (row, History.from_dict(json.loads(history)))
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise ValueError(
                    f"sweep storage {self.path!r} is damaged: sweep {key}, cell {position}: {error}"
                ) from None
        return out


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
