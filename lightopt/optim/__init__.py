"""The optimizers of chapter 8, as ``torch.optim.Optimizer`` subclasses.

==================  =========================================  ==========================
class               book                                       kernel
==================  =========================================  ==========================
SGD                 Algorithms 8.1, 8.2, 8.3 (§8.3)            torch's SGD kernels
AdaGrad             Algorithm 8.4 (§8.5.1)                     torch's Adagrad kernels
RMSProp             Algorithms 8.5, 8.6 (§8.5.2)               lightopt (δ inside the root)
Adam                Algorithm 8.7 (§8.5.3)                     torch's Adam kernels
Newton              Algorithm 8.8, eq. 8.28 (§8.6.1)           lightopt (solve, or CG)
ConjugateGradient   Algorithm 8.9 (§8.6.2)                     lightopt, torch's Wolfe
BFGS                §8.6.3, eq. 8.33                           lightopt (dense M)
LBFGS               §8.6.3                                     torch's LBFGS
NaturalGradient     §8.6, empirical Fisher (not in the book)   lightopt (CG)
==================  =========================================  ==========================

A NaN or infinite loss, gradient or step raises :class:`NonFiniteError` (a ``ValueError``) naming
the optimizer, the step and the quantity: every iteration for the second-order methods, by cheap
periodic checks for the first-order ones (``check_finite_every``; see ``lightopt.optim._finite``).
Complex parameters are stepped as pairs of reals by the first-order optimizers and LBFGS, as
torch.optim does; the other second-order methods refuse them with a ``TypeError``.
"""

from lightopt.optim._finite import NonFiniteError as NonFiniteError  # public, but not an optimizer: not in __all__
from lightopt.optim.adagrad import AdaGrad
from lightopt.optim.adam import Adam
from lightopt.optim.bfgs import BFGS
from lightopt.optim.conjugate_gradient import ConjugateGradient
from lightopt.optim.lbfgs import LBFGS
from lightopt.optim.natural_gradient import NaturalGradient
from lightopt.optim.newton import Newton
from lightopt.optim.rmsprop import RMSProp
from lightopt.optim.sgd import SGD

# The optimizers; NonFiniteError is imported from here too (``from lightopt.optim import NonFiniteError``).
__all__ = ["SGD", "AdaGrad", "RMSProp", "Adam", "Newton", "ConjugateGradient", "BFGS", "LBFGS", "NaturalGradient"]
