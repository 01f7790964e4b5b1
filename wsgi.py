from verifier import create_app

app = create_app()
