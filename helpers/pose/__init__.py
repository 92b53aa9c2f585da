"""Pose front-end shared by the tasks: DWPose ONNX runner, keypoint format, alignment, OpenPose-style rendering."""
