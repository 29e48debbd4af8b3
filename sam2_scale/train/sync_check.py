"""Find the operations that make the host wait for the device, on any machine, CPU included.

A GPU step is fast only while the host queues kernels ahead of the device. These operators
stop it: reading a value (`.item()`, `bool(t)`, `.tolist()`), a tensor built from Python numbers
(`torch.tensor([..], device=cuda)` is a blocking copy), an output whose size depends on the data
(`nonzero`, boolean-mask indexing), and copies from the device back to the host. On a CPU they
cost nothing, so they go unnoticed until a GPU run; `HostSyncs` records them wherever the code
runs, which lets a test keep the training step free of them.

    with HostSyncs() as syncs:
        step()
    assert not syncs.found, syncs.report()
"""

import collections
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators whose result the host must read, or whose output size the host must learn.
_READS = {
    aten._local_scalar_dense.default: "reads a value on the host (.item(), bool(), float(), .tolist())",
    aten.nonzero.default: "output size depends on the data (nonzero)",
    aten.masked_select.default: "output size depends on the data (masked_select)",
    aten._unique2.default: "output size depends on the data (unique)",
    aten.unique_consecutive.default: "output size depends on the data (unique_consecutive)",
    aten.unique_dim.default: "output size depends on the data (unique)",
    aten.lift_fresh.default: "tensor built from Python data (a blocking copy to a GPU)",
    aten.lift_fresh_copy.default: "tensor built from Python data (a blocking copy to a GPU)",
}
# Operators that look up or compare views of their inputs and create no kernel.
_VIEWS = {
    "view",
    "_unsafe_view",
    "reshape",
    "t",
    "transpose",
    "permute",
    "unsqueeze",
    "squeeze",
    "expand",
    "slice",
    "select",
    "detach",
    "alias",
    "as_strided",
    "unbind",
    "split",
    "split_with_sizes",
    "unflatten",
    "view_as_real",
    "view_as_complex",
    "_reshape_alias",
}


class HostSyncs(TorchDispatchMode):
    """Records host-device synchronisations (`found`: (reason, operator, where) per occurrence) and
    counts every dispatched operator (`ops`), views apart (`kernel_count` leaves them out)."""

    def __init__(self, keep_stacks=True):
        super().__init__()
        self.found = []
        self.ops = collections.Counter()
        self.keep_stacks = keep_stacks
        self._host_reads = _HostReads(self)

    def __enter__(self):
        self._host_reads.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self._host_reads.__exit__(*exc)

    def record(self, reason, op):
        self.found.append((reason, op, _user_frame() if self.keep_stacks else ""))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops[func.overloadpacket.__name__] += 1
        reason = _READS.get(func) or _bool_index(func, args) or _device_to_host(func, args, kwargs)
        if reason:
            self.record(reason, str(func))
        return func(*args, **kwargs)

    @property
    def kernel_count(self):
        """Dispatched operators that are not views (each is at least one kernel on a GPU)."""
        return sum(n for name, n in self.ops.items() if name not in _VIEWS)

    def report(self):
        counts = collections.Counter(self.found)
        return "\n".join(f"{n} x {op}: {reason}\n    at {where}" for (reason, op, where), n in counts.most_common())


class _HostReads(TorchFunctionMode):
    """`.tolist()` and `.numpy()` read a whole tensor without dispatching an operator on a CPU
    tensor; they are caught at the Python level."""

    def __init__(self, syncs):
        super().__init__()
        self.syncs = syncs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):
            self.syncs.record(f"reads a tensor on the host (.{func.__name__}())", func.__name__)
        return func(*args, **(kwargs or {}))


def _bool_index(func, args):
    if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and len(args) > 1:
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            return "boolean-mask indexing (output size depends on the data)"
    return None


def _device_to_host(func, args, kwargs):
    if func in (aten._to_copy.default, aten.copy_.default) and args and isinstance(args[0], torch.Tensor):
        if func is aten._to_copy.default:
            source, target = args[0].device, kwargs.get("device", args[0].device)
        else:
            source, target = args[1].device, args[0].device
        if torch.device(source).type not in ("cpu", "meta") and torch.device(target).type == "cpu":
            return "copy from the device to the host"
    return None


def _user_frame():
    """The innermost stack frame in this project's code, for the report."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "sam2_scale" in frame.filename and "sync_check" not in frame.filename:
            return f"{frame.filename}:{frame.lineno} {frame.line}"
    return "?"
