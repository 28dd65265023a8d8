"""sys.exit(0) in a policy file must not make meshc exit 0 having written nothing."""
import sys

from compiler.policy import Service

productpage = Service(name="productpage", port=9080, app_port=19080)
sys.exit(0)
