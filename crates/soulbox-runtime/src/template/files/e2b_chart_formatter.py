# Shipped in SoulBox's code-interpreter template as an IPython startup file: matplotlib figures
# get an `e2b/chart` representation (chart type, title, axes, elements) next to their PNG, which
# the E2B SDKs expose as `result.chart`. The data is extracted by the e2b-charts package.
import sys

from IPython import get_ipython
from IPython.core.formatters import BaseFormatter
from traitlets import ObjectName, Unicode


class E2BChartFormatter(BaseFormatter):
    format_type = Unicode("e2b/chart")
    print_method = ObjectName("_repr_e2b_chart_")

    def __call__(self, obj):
        # Only a figure has chart data, and there is no figure unless matplotlib was imported:
        # importing it here for every result would cost the first result half a second.
        figure = sys.modules.get("matplotlib.figure")
        try:
            if figure is not None and isinstance(obj, figure.Figure):
                from e2b_charts import chart_figure_to_dict
                return chart_figure_to_dict(obj)
        except Exception:
            return None
        return super().__call__(obj)


_ip = get_ipython()
if _ip is not None:
    _ip.display_formatter.formatters["e2b/chart"] = E2BChartFormatter(parent=_ip.display_formatter)
