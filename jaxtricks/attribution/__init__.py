"""Attribution of a model's output to its inputs: integrated gradients."""

from ._integrated_gradients import integrated_gradients as integrated_gradients

__all__: list[str] = ["integrated_gradients"]
