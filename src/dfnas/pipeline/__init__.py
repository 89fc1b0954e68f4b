"""`dfnas run`: teacher -> synthesis -> search -> training -> report in one resumable folder.

    from dfnas.pipeline.run import DEMO, run_pipeline
"""
