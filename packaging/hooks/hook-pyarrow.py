# Replaces pyinstaller-hooks-contrib's pyarrow hook, which collects every submodule and shared
# library (Flight, S3, GCS, Substrait, the C++ tests: about 70 MB more). The app reads Parquet
# only (app/datasets/readers.py); the libraries lib.so links are found by PyInstaller's own
# binary analysis.
from PyInstaller.utils.hooks import collect_data_files

hiddenimports = [
    "pyarrow.lib",
    "pyarrow._fs",
    "pyarrow.fs",
    "pyarrow._parquet",
    "pyarrow.parquet",
    "pyarrow._compute",
    "pyarrow._generated_version",
    "pyarrow.vendored.version",
]
datas = collect_data_files(
    "pyarrow", excludes=["**/tests/**", "include/**", "**/*.pxd", "**/*.pyx", "**/*.h"]
)
