# Renders resources/icons/app.svg to the PNG sizes the window and the installers use.
# Run from the repository root: QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/render_icons.py
import sys

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

app = QGuiApplication(sys.argv)
r = QSvgRenderer("resources/icons/app.svg")
for size in (16, 24, 32, 48, 64, 128, 256, 512):
    img = QImage(size, size, QImage.Format.Format_ARGB32)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    r.render(p)
    p.end()
    img.save(f"resources/icons/app-{size}.png")
