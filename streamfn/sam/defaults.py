"""What a template run assumes unless told otherwise, declared once for the loader and the
command line (which must not import the loader before a template is given)."""

#: The account of the template's ARNs: moto's default, and the one AWS's examples use.
DEFAULT_ACCOUNT_ID = "123456789012"
