from trioswap.responder.server import main

main()
