"""``google.colab.output``: the widget-manager switches are logged, nothing else happens."""

from google.colab import _calls


def enable_custom_widget_manager():
    _calls.record("output.enable_custom_widget_manager")


def disable_custom_widget_manager():
    _calls.record("output.disable_custom_widget_manager")


def clear(wait=False, output_tags=()):
    _calls.record("output.clear")
