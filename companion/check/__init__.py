"""Self-checks for the exercises: run a student's function, compare it with the reference, explain.

``from companion import check`` gives every check of the course by name::

    check.neuron_forward(my_neuron)     # ❌ or ✅ with what differs, never the answer
    check.hint("neuron_forward")        # the method, when a student asks for it

:mod:`companion.check.core` holds what every check builds on; each other module
holds the checks of one chapter's topic.
"""

from companion.check.core import *  # noqa: F403
from companion.check.neurons import *  # noqa: F403
from companion.check.learning import *  # noqa: F403
from companion.check.backprop import *  # noqa: F403
from companion.check.mnist import *  # noqa: F403
from companion.check.optim import *  # noqa: F403
from companion.check.regularization import *  # noqa: F403
from companion.check.attention import *  # noqa: F403
from companion.check.conv import *  # noqa: F403
from companion.check.recurrent import *  # noqa: F403
from companion.check.scale import *  # noqa: F403
from companion.check.llm import *  # noqa: F403
from companion.check.finetune import *  # noqa: F403
