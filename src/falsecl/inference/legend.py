"""The legend of a class map, in the forms GIS software reads: colour table, GDAL categories and RAT, QGIS style.

- The GeoTIFF colour table: one entry per class. A TIFF colour map always has 2^8 slots for a uint8 band (RGB,
  no alpha), so GDAL pads it with black and ``gdalinfo`` lists 256 entries; nodata (255) is declared as the
  band's nodata value, which GIS software draws transparent.
- GDAL category names and a thematic raster attribute table (value, class name, RGB), in GDAL's PAM sidecar
  ``<map>.tif.aux.xml`` (GeoTIFF has no tag for them); ArcGIS and ``gdalinfo`` read them.
- A QGIS style ``<map>.qml`` next to the map: QGIS loads a layer's same-named ``.qml`` as its default style, so
  the legend lists the K classes by name instead of one entry per colour-table slot (256).
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr


def colour_table(colours: Sequence[Sequence[int]]) -> dict[int, tuple[int, int, int, int]]:
    """Colour-table entries of the classes only (nothing for unused values or nodata).

    Args:
        colours: RGB per class ``0..K-1``.

    Returns:
        ``{value: (r, g, b, 255)}`` for ``value`` in ``0..K-1``.
    """
    return {i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(colours)}


def category_sidecar_xml(names: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """GDAL PAM XML giving band 1 category names and a thematic raster attribute table.

    Args:
        names: Class name per class value ``0..K-1``.
        colours: RGB per class.

    Returns:
        The content of a ``.aux.xml`` file (GDAL reads it as the band's ``Categories`` and RAT).
    """
    cats = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    fields = [("Value", 0, 5), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    defs = "".join(
        f'      <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>\n'
        for i, (n, t, u) in enumerate(fields)
    )
    rows = "".join(
        f'      <Row index="{i}"><F>{i}</F><F>{escape(n)}</F><F>{c[0]}</F><F>{c[1]}</F><F>{c[2]}</F></Row>\n'
        for i, (n, c) in enumerate(zip(names, colours, strict=True))
    )
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n'
        f"{cats}    </CategoryNames>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{defs}{rows}    </GDALRasterAttributeTable>\n  </PAMRasterBand>\n</PAMDataset>\n"
    )


def qgis_style(names: Sequence[str], colours: Sequence[Sequence[int]]) -> str:
    """A QGIS layer style (``.qml``): a paletted renderer with one entry per class, nodata left transparent.

    Args:
        names: Class name per class value ``0..K-1``.
        colours: RGB per class.

    Returns:
        The content of ``<map>.qml`` (QGIS 3.x reads it as the layer's default style).
    """
    entries = "".join(
        f"        <paletteEntry value=\"{i}\" color=\"#{c[0]:02x}{c[1]:02x}{c[2]:02x}\" alpha=\"255\" "
        f"label={quoteattr(str(n))}/>\n"
        for i, (n, c) in enumerate(zip(names, colours, strict=True))
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n  <pipe>\n'
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        f"      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )
