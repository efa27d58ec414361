"""`aes-index review`: a local web app to decide at 100 % by keyboard (issue 25).

server.py   the Starlette app behind uvicorn: token, Host and Origin checks, the JSON API
views.py    what the API answers, read from the library on the index's own thread
images.py   a photo at screen size and 100 % tiles, cached outside the library
decisions.py  a person's pick, reject or stars, written through the rating targets as theirs
page/       the page: HTML, JavaScript, CSS
"""
