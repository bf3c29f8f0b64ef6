"""Face detection: MTCNN's cascade and the box arithmetic it needs.

  boxes           NumPy box arithmetic (IoU, NMS, squaring, regression, padded crops)
  mtcnn_detector  ``MTCNNDetector``: photos -> boxes, scores, five points
  import_mtcnn    the authors' released weights -> a jaxmarks export (optional extra)
"""
