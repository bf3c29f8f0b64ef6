"""A CLU metric writer that writes TensorBoard event files without TensorFlow.

CLU's own ``SummaryWriter`` imports TensorFlow, which jaxmarks never imports.
The event file format is small: a TFRecord stream (length, masked CRC32C, data,
masked CRC32C) of ``tensorflow.Event`` protocol buffers; only scalar summaries
are written, hand-encoded here. TensorBoard reads the files as usual.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any, Mapping

import numpy as np


def _clu_interface():
  """``clu.metric_writers.interface``, even where TensorFlow is absent.

  ``clu/metric_writers/__init__.py`` imports CLU's TensorFlow summary writer, so
  without TensorFlow the package cannot be imported; its ``interface`` module
  itself only needs numpy and jax, and is then loaded from its file.
  """
  try:
    from clu.metric_writers import interface  # pylint: disable=g-import-not-at-top
    return interface
  except ImportError:
    import importlib.util  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    import clu  # pylint: disable=g-import-not-at-top
    name = "jaxmarks_clu_metric_writer_interface"
    if name in sys.modules:
      return sys.modules[name]
    path = os.path.join(os.path.dirname(clu.__file__), "metric_writers", "interface.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


interface = _clu_interface()

__all__ = ["EventFileWriter", "TensorBoardWriter"]


def _make_crc_table():
  poly = 0x82F63B78
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ poly if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
  return _varint((number << 3) | wire) + payload


def _len_field(number: int, data: bytes) -> bytes:
  return _field(number, 2, _varint(len(data)) + data)


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           scalars: Mapping[str, float] | None = None) -> bytes:
  msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(int(step)))
  if file_version is not None:
    msg += _len_field(3, file_version.encode())
  if scalars:
    summary = b""
    for tag, value in scalars.items():
      val = _len_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(value)))
      summary += _len_field(1, val)
    msg += _len_field(5, summary)
  return msg


class EventFileWriter:
  """Appends scalar events to one ``events.out.tfevents.*`` file in ``logdir``."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._write(_event(time.time(), 0, file_version="brain.Event:2"))

  def _write(self, data: bytes) -> None:
    header = struct.pack("<Q", len(data))
    self._f.write(header + struct.pack("<I", _masked_crc(header)) + data
                  + struct.pack("<I", _masked_crc(data)))

  def add_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._write(_event(time.time(), step, scalars=scalars))

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()


class TensorBoardWriter(interface.MetricWriter):
  """``clu.metric_writers.MetricWriter`` writing scalars to TensorBoard event files.

  Non-scalar writes (images, texts, histograms, hparams) are ignored.
  """

  def __init__(self, logdir: str):
    self._writer = EventFileWriter(logdir)

  def write_summaries(self, step, values, metadata=None):
    scalars = {k: float(np.asarray(v)) for k, v in values.items() if np.asarray(v).size == 1}
    if scalars:
      self._writer.add_scalars(step, scalars)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._writer.add_scalars(step, {k: float(np.asarray(v)) for k, v in scalars.items()})

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_pointcloud(self, step, point_clouds, *, point_colors=None, configs=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()
