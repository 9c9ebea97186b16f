"""The transform the deploy test applies before moto: exactly what moto_template's docstring says."""

from __future__ import annotations

from moto_template import MOTO_LACKS, placeholder, readme_table, unsupported_types, without_unsupported

LAYER_PATH = "/aws/service/powertools/python/arm64/python3.12/latest"
TEMPLATE = {
    "Parameters": {
        "LayerArn": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": LAYER_PATH},
        "BootstrapVersion": {
            "Type": "AWS::SSM::Parameter::Value<String>",
            "Default": "/cdk-bootstrap/hnb659fds/version",
        },
    },
    "Resources": {
        "Function": {
            "Type": "AWS::Lambda::Function",
            "DependsOn": ["Rule", "Role"],
            "Properties": {
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                "Layers": [{"Ref": "LayerArn"}],
                "Environment": {
                    "Variables": {
                        "RULE": {"Ref": "Rule"},
                        "RULE_ARN": {"Fn::GetAtt": ["Rule", "Arn"]},
                        "BOTH": {"Fn::Sub": "${Rule.Arn} ${Role.Arn}"},
                    }
                },
            },
        },
        "Rule": {"Type": "AWS::IoT::TopicRule", "Properties": {"TopicRulePayload": {}}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
        "Provider": {"Type": "Custom::Thing", "Properties": {}},
    },
    "Outputs": {"RuleName": {"Value": {"Ref": "Rule"}}},
}


def test_only_the_lacking_types_go_and_references_to_them_become_placeholders():
    template, removed = without_unsupported(TEMPLATE)
    assert removed == {"Rule": "AWS::IoT::TopicRule"}  # Custom::Thing is not in the table: the test would fail
    assert list(template["Resources"]) == ["Role", "Function", "Provider"]  # after what they depend on
    function = template["Resources"]["Function"]
    assert function["DependsOn"] == ["Role"]
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["Role", "Arn"]}
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables == {
        "RULE": placeholder("Rule"),
        "RULE_ARN": placeholder("Rule", "Arn"),
        "BOTH": {"Fn::Sub": f"{placeholder('Rule', 'Arn')} ${{Role.Arn}}"},
    }
    assert template["Outputs"]["RuleName"]["Value"] == placeholder("Rule")
    assert TEMPLATE["Resources"]["Function"]["DependsOn"] == ["Rule", "Role"]  # the input is left alone


def test_public_ssm_parameters_become_placeholders_and_the_bootstrap_version_stays():
    template, _ = without_unsupported(TEMPLATE)
    assert template["Parameters"]["LayerArn"]["Type"] == "String"
    assert template["Parameters"]["LayerArn"]["Default"].startswith("arn:aws:lambda:")
    assert template["Parameters"]["BootstrapVersion"] == TEMPLATE["Parameters"]["BootstrapVersion"]


def test_custom_resources_count_as_lacking_and_the_readme_table_lists_every_type():
    assert unsupported_types(TEMPLATE) == {"AWS::IoT::TopicRule", "Custom::Thing"}
    assert all(f"`{resource_type}`" in readme_table() for resource_type in MOTO_LACKS)
