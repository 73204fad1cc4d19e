"""Layer 1, faces: MTCNN face and landmark detection, and the similarity transforms to the
model's canvas."""
