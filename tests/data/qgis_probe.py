"""Run by Debian's /usr/bin/python3 (PyQGIS): load geoseg outputs as QGIS does, print JSON.

Usage: python3 qgis_probe.py CLASSES_TIF CONFIDENCE_TIF VECTOR_FILE
"""

import json
import os
import sys

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer

app = QgsApplication([], False)
app.initQgis()
messages = []
QgsApplication.messageLog().messageReceived.connect(
    lambda text, tag, level: messages.append(f"{tag}: {text}") if int(level) >= 1 else None
)
classes, confidence, vector = sys.argv[1:4]
raster = QgsRasterLayer(classes, "classes")
renderer = raster.renderer()
palette = [[c.value, c.label, c.color.name()] for c in getattr(renderer, "classes", lambda: [])()]
conf = QgsRasterLayer(confidence, "confidence")
layer = QgsVectorLayer(vector, "polygons", "ogr")
vec = layer.renderer()
categories = [
    [c.value(), c.label(), c.symbol().color().name()]
    for c in getattr(vec, "categories", lambda: [])()
]
print(
    json.dumps(
        {
            "raster_valid": raster.isValid(),
            "raster_renderer": renderer.type(),
            "palette": palette,
            "confidence_renderer": conf.renderer().type(),
            "vector_valid": layer.isValid(),
            "vector_renderer": vec.type() if vec else None,
            "categories": categories,
            "features": layer.featureCount(),
            "messages": messages,
        }
    )
)
sys.stdout.flush()
os._exit(0)  # exitQgis() can crash at teardown when headless
