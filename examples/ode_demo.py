"""Every Jacobian strategy of pitsolve on one nonlinear ODE (Van der Pol), beside the sequential solve.

The same as ``pitsolve solve``; see :mod:`pitsolve.adapters.cli.ode` for what it prints and saves.

    python examples/ode_demo.py --output outputs/demo
"""

from pitsolve.adapters.cli.ode import main

if __name__ == "__main__":
    main()
