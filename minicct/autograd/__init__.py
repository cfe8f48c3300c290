"""The autograd engine: Tensor, Function, no_grad and the gradient checker."""
from minicct.autograd.grad_mode import no_grad, is_grad_enabled, set_grad_enabled
from minicct.autograd.tensor import Tensor, unbroadcast, grad
from minicct.autograd.function import Function, Context
from minicct.autograd.ops import concatenate, stack
from minicct.autograd.gradcheck import gradcheck, GradcheckError

__all__ = ["Tensor", "Function", "Context", "no_grad", "is_grad_enabled", "set_grad_enabled",
           "unbroadcast", "grad", "concatenate", "stack", "gradcheck", "GradcheckError"]
