"""The comparison grid: paradigms x augmentation x crops x sizes x seeds at equal budget."""
