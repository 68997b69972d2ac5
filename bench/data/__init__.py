"""The data path every dataset goes through: video decoding, frame sampling, the frame cache, torch datasets."""
