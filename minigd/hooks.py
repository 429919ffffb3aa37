"""When an engine hook may stand in for the math a class writes.

Built-in classes carry two versions of their arithmetic: the plain NumPy math a user would write
(``Layer.forward``/``backward``, ``Optimizer.update``, ``Loss.value_and_grad``) and faster engine
hooks that do the same into reused buffers with the backend's kernels (``forward_batch``,
``backward_batch``, ``update_flat``, ``value_and_grad_into``). A user who subclasses a built-in
and rewrites only its math must get the math they wrote, not the parent's hooks. The rule, the
same for layers, optimizers and losses: a hook applies only when the class that defines it is the
class that defines the math, or a subclass of it.
"""

import functools


def _owner(cls, name):
    """The class in ``cls``'s MRO whose body defines ``name`` (None when none does)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


@functools.lru_cache(maxsize=None)
def hooks_apply(cls, hooks, math):
    """True when every hook in ``hooks`` is defined at or below every method in ``math``
    (names, tuples) in ``cls``'s hierarchy, so the hooks compute what the math says."""
    for hook in hooks:
        hook_owner = _owner(cls, hook)
        for method in math:
            math_owner = _owner(cls, method)
            if hook_owner is None or math_owner is None or not issubclass(hook_owner, math_owner):
                return False
    return True
